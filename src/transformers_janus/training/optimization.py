"""
One optimizer step over several micro-batches with the loss normalised over the whole global batch, as
transformers' `Trainer` does with `average_tokens_across_devices`: the text and image targets of every micro-batch
of the step, on every process, are counted first and passed to the model as `num_items_in_batch` /
`num_image_items_in_batch`, and each micro-batch's loss is multiplied by the number of processes (data parallel
averages gradients over processes). The step's gradient is then the gradient of (sum of token cross-entropies) /
(number of targets) over the global batch, whatever its split into processes and accumulation steps: W processes x A
micro-batches equal 1 process x W*A micro-batches.
"""

import contextlib
from dataclasses import dataclass

import torch
from transformers import get_scheduler

from .stages import ADAM_BETAS, WEIGHT_DECAY


@dataclass
class StepOutput:
    """
    What one optimizer step measured, on this process, as tensors (reading them syncs with the device, so the loop
    does it only when it logs).

    text_loss / image_loss: this process's share of the step's mean token loss of each kind (summed over processes
        it is the global mean).
    num_text_targets / num_image_targets: the global batch's target counts.
    grad_norm: the total gradient norm before clipping (None where the backend does not report it).
    """

    text_loss: torch.Tensor
    image_loss: torch.Tensor
    num_text_targets: torch.Tensor
    num_image_targets: torch.Tensor
    grad_norm: torch.Tensor | None


LR_SCHEDULER_TYPES = ("constant", "cosine", "linear")


def create_optimizer_and_scheduler(
    model: torch.nn.Module,
    learning_rate: float,
    warmup_steps: int,
    lr_scheduler_type: str = "constant",
    num_training_steps: int | None = None,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """
    The paper's optimizer over the trainable parameters: AdamW(0.9, 0.95), no weight decay, a linear warm-up, then the
    paper's constant LR, or a decay to 0 at `num_training_steps` (`cosine`, `linear`: transformers' schedules), which
    a model trained from scratch in few steps gains from.
    """
    if lr_scheduler_type not in LR_SCHEDULER_TYPES:
        raise ValueError(f"`lr_scheduler_type` must be one of {LR_SCHEDULER_TYPES}, got {lr_scheduler_type!r}.")
    if lr_scheduler_type != "constant" and not num_training_steps:
        raise ValueError(f"A {lr_scheduler_type} schedule decays to 0 at `num_training_steps`: pass it.")
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not parameters:
        raise ValueError("The model has no trainable parameter: check the stage's or `--trainable_modules` policy.")
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY)
    name = "constant_with_warmup" if lr_scheduler_type == "constant" else lr_scheduler_type
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=num_training_steps)
    return optimizer, scheduler


def count_targets(micro_batches: list[dict]) -> torch.Tensor:
    """
    `[text, image]` target counts of `micro_batches`, as the model's losses count them: `labels[:, 1:]` and
    `image_labels[:, 1:]` not -100 (the model shifts, so position 0 is never a target).
    """
    counts = torch.zeros(2, dtype=torch.long)
    for batch in micro_batches:
        for index, key in enumerate(("labels", "image_labels")):
            if batch.get(key) is not None:
                counts[index] += (batch[key][:, 1:] != -100).sum().cpu()
    return counts


def training_step(
    accelerator,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    micro_batches: list[dict],
    max_grad_norm: float | None,
) -> StepOutput:
    """
    Forward and backward over this process's `micro_batches` (dicts of model inputs: `input_ids`, `labels`,
    `image_token_ids`, `image_labels`, ...), gradients synchronised only after the last, then clip, step the optimizer
    and the scheduler. The accelerator must be built with `gradient_accumulation_steps=1` (this function accumulates,
    as `Trainer` does) and `step_scheduler_with_optimizer=False` (the schedule counts optimizer steps, not one per
    process per step). Every process must pass the same number of micro-batches.
    """
    from accelerate.utils import DistributedType

    device = accelerator.device
    counts = count_targets(micro_batches).to(device)
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    num_text_targets, num_image_targets = counts[0], counts[1]
    # Data parallel backends average gradients over processes; the loss is a sum over the global batch.
    loss_scale = accelerator.num_processes
    is_deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    backward_kwargs = {"scale_wrt_gas": False} if is_deepspeed else {}

    text_loss = torch.zeros((), device=device)
    image_loss = torch.zeros((), device=device)
    model.train()
    for index, batch in enumerate(micro_batches):
        is_last = index == len(micro_batches) - 1
        accelerator.gradient_state._set_sync_gradients(is_last)
        sync_context = (
            contextlib.nullcontext() if is_last or is_deepspeed else accelerator.no_sync(model)
        )
        with sync_context:
            batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
            outputs = model(
                **batch,
                num_items_in_batch=num_text_targets,
                num_image_items_in_batch=num_image_targets,
            )
            accelerator.backward(outputs.loss * loss_scale, **backward_kwargs)
        text_loss += outputs.text_loss.detach().float()
        image_loss += outputs.image_loss.detach().float()

    grad_norm = None
    if max_grad_norm is not None and max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(
            [parameter for parameter in model.parameters() if parameter.requires_grad], max_grad_norm
        )
    optimizer.step()
    if not accelerator.optimizer_step_was_skipped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutput(
        text_loss=text_loss,
        image_loss=image_loss,
        num_text_targets=num_text_targets,
        num_image_targets=num_image_targets,
        grad_norm=grad_norm,
    )
