"""
Supervised fine-tuning of Janus-Pro with TRL's `SFTTrainer` (`training/sft_trl.py` is the command line for it).

TRL's own collators tokenize with `add_special_tokens=False` (our chat template holds no BOS, so batches would have
none), supervise the system prompt and the `<image_placeholder>` runs unless `assistant_only_loss` is set, and
truncate at `max_length`, cutting image blocks. So the trainer here feeds `SFTTrainer` batches built by our own
encoder and collator (`training.data.JanusProSampleEncoder`, `training.collator.JanusProDataCollator`), the batches
`training/train.py` trains on: BOS once per sample, only the assistant answers and the EOS after each supervised,
samples longer than `max_length` refused or dropped by record id before training, never truncated.

Public API:

- `JanusProSFTTrainer(model, args, train_dataset, processing_class, eval_dataset=None, peft_config=None,
  vq_codes=None, cfg_drop_prob=0.1, on_bad_sample="fail", ...)`: an `SFTTrainer` on records of
  `training.data.load_samples` (understanding/text conversations, or text-to-image captions for the image loss).
- `JanusProSFTCollator(encoder, collator)`: records -> the model's batch (what the trainer's dataloader yields).
- `DEFAULT_LORA_TARGET_MODULES`: the LoRA target regex used when a `LoraConfig` names none: the attention and MLP
  projections of the language model only (plain `["q_proj", "v_proj"]` would also wrap SigLIP's attention).
- `lora_target_modules(names)`: `ModelConfig.lora_target_modules` (a list from the command line) as PEFT takes it.
"""

import re

import torch
from trl import SFTConfig, SFTTrainer
from transformers.utils import logging

from .collator import JanusProDataCollator
from .data import IGNORE_INDEX, JanusProSampleEncoder, VQCodeCache, check_samples


logger = logging.get_logger(__name__)

DEFAULT_LORA_TARGET_MODULES = r"model\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

# What full fine-tuning trains for each kind of data: the parts its forward uses, never the VQ model.
FULL_FINETUNING_MODULES = {
    "understanding": ("model.vision_model.", "model.aligner.", "model.language_model.", "lm_head."),
    "generation": ("model.gen_embed.", "model.gen_aligner.", "model.gen_head.", "model.language_model."),
}

_REGEX_CHARACTERS = re.compile(r"[\\*+?()\[\]|^$]")


def lora_target_modules(names: list[str] | None) -> str | list[str]:
    """
    LoRA `target_modules` from `--lora_target_modules`: none -> `DEFAULT_LORA_TARGET_MODULES`; a single regex
    (or `all-linear`) -> that string, which PEFT matches against full module names; else the list of module-name
    suffixes, as PEFT matches lists.
    """
    if not names:
        return DEFAULT_LORA_TARGET_MODULES
    if len(names) == 1 and (names[0] == "all-linear" or _REGEX_CHARACTERS.search(names[0])):
        return names[0]
    return list(names)


class JanusProSFTCollator:
    """
    Encode records (rows of `load_samples`) and collate them into the training batch contract. Understanding/text
    batches drop `image_token_ids`/`image_labels` (all -100), so `SFTTrainer` sees a plain causal-LM batch; the
    collator's `meta` is dropped too (the record ids of a bad sample are in the encoder's error).
    """

    def __init__(self, encoder: JanusProSampleEncoder, collator: JanusProDataCollator):
        self.encoder = encoder
        self.collator = collator

    def __call__(self, records: list[dict]) -> dict:
        # The CFG caption drop of generation samples draws from torch's RNG (seeded by the trainer and per worker).
        samples = [self.encoder.encode(record) for record in records]
        batch = self.collator(samples)
        batch.pop("meta")
        if all(sample["kind"] != "generation" for sample in samples):
            batch.pop("image_token_ids")
            batch.pop("image_labels")
        return batch


class JanusProSFTTrainer(SFTTrainer):
    """
    `SFTTrainer` for Janus-Pro on records of `training.data.load_samples`: understanding or text conversations
    (text loss, through TRL's fused LM head and its `entropy` / `mean_token_accuracy` metrics) or text-to-image
    samples (caption -> VQ codes, the image loss).

    TRL's fused LM head (TRL 1.16 patches the model's forward with it) scores only `labels` through `lm_head`; it
    would silently drop the image loss. Batches with `image_labels` therefore run the model's own forward, whose
    `loss = text_loss + image_loss`. transformers' `Trainer` counts `num_items_in_batch` from `labels` alone (0 for
    text-to-image batches), so `get_batch_samples` also counts the image targets of the whole optimizer step (all
    accumulation steps, and all processes with `average_tokens_across_devices`) and passes them to the model as
    `num_image_items_in_batch`: the image loss is its sum over the step divided by that count, as `train.py`'s is.

    Settings of `args` this trainer decides: `remove_unused_columns=False` (the collator needs the record columns)
    and `dataset_kwargs={"skip_prepare_dataset": True}` (records are encoded by the collator); `packing` (or
    `padding_free`) packs the samples of each micro-batch into rows of `max_length` with `position_ids` restarting
    per sample (TRL's own packing refuses image datasets and custom collators), and TRL's packing/padding-free and
    `assistant_only_loss` are turned off (the collator always supervises only the answers).

    Args:
        model: A `JanusProForConditionalGeneration` (TRL's model-id loading does not know DeepSeek's format).
        args (`SFTConfig`): `max_length` is the longest sample accepted (longer ones are bad samples, never truncated).
        train_dataset / eval_dataset (`datasets.Dataset`): Records of one kind from `load_samples`.
        processing_class (`JanusProProcessor`): The model's processor.
        vq_codes (`VQCodeCache`, *optional*): VQ codes of generation images; required for generation records.
        cfg_drop_prob (`float`, *optional*, defaults to 0.1): Probability of training a caption as the unconditional
            prompt (classifier-free guidance).
        on_bad_sample (`str`, *optional*, defaults to `"fail"`): `fail` refuses to start, naming the bad records;
            `skip` trains without them. Every record is checked before training.
        peft_config (`peft.LoraConfig`, *optional*): Without `target_modules`, `DEFAULT_LORA_TARGET_MODULES`.
    """

    _tag_names = ["trl", "sft", "janus-pro"]

    def __init__(
        self,
        model,
        args: SFTConfig,
        train_dataset,
        processing_class,
        eval_dataset=None,
        peft_config=None,
        vq_codes: VQCodeCache | None = None,
        cfg_drop_prob: float = 0.1,
        on_bad_sample: str = "fail",
        **kwargs,
    ):
        if isinstance(model, str):
            raise ValueError(
                "`model` must be a loaded `JanusProForConditionalGeneration`, got the string "
                f"{model!r}; load it with `JanusProForConditionalGeneration.from_pretrained({model!r})`."
            )
        if args.max_length is None:
            raise ValueError("`max_length` must be set (the longest sample accepted), got None.")
        if kwargs.get("data_collator") is not None:
            raise ValueError("`data_collator` is built by JanusProSFTTrainer from the processor; do not pass one.")
        packing = bool(args.packing or args.padding_free)
        args.packing = args.padding_free = False
        if args.assistant_only_loss:
            logger.info("`assistant_only_loss` is what the Janus-Pro collator always does; TRL's is turned off.")
            args.assistant_only_loss = False
        args.remove_unused_columns = False
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        if peft_config is not None and getattr(peft_config, "target_modules", "unset") is None:
            peft_config.target_modules = DEFAULT_LORA_TARGET_MODULES

        # Every record is checked before training: a sample longer than `max_length` is refused by record id
        encoder = JanusProSampleEncoder(processing_class, args.max_length, vq_codes=vq_codes, cfg_drop_prob=cfg_drop_prob)
        datasets = {"train": train_dataset}
        if eval_dataset is not None:
            datasets["eval"] = eval_dataset
        kinds = {name: set(dataset["kind"]) for name, dataset in datasets.items()}
        if any(len(names) != 1 for names in kinds.values()):
            raise ValueError(f"Each dataset must hold records of one kind (from `load_samples`), got kinds {kinds}.")
        if "generation" in kinds["train"] and vq_codes is None:
            raise ValueError("Generation records need `vq_codes=VQCodeCache(model, processor.image_processor, dir)`.")
        checked = {}
        for name, dataset in datasets.items():
            kind = next(iter(kinds[name]))
            checked[name] = check_samples({kind: dataset}, encoder, on_bad_sample=on_bad_sample)[kind]
            if len(checked[name]) == 0:
                raise ValueError(f"No usable records left in the {name} dataset after dropping the bad ones.")
        collator = JanusProDataCollator(
            processing_class.pad_token_id,
            max_length=args.max_length,
            packing=packing,
            pad_to_multiple_of=args.pad_to_multiple_of,
        )
        super().__init__(
            model=model,
            args=args,
            data_collator=JanusProSFTCollator(encoder, collator),
            train_dataset=checked["train"],
            eval_dataset=checked.get("eval"),
            processing_class=processing_class,
            peft_config=peft_config,
            **kwargs,
        )

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None, **kwargs):
        """
        Our card in `output_dir/README.md` (real `base_model`, `image-text-to-text`, how to load it with and without
        this package, the run's arguments and last loss) instead of TRL's (`base_model: None`, a text-generation quick
        start); `push_to_hub` uploads it.
        """
        from ..model_card import TrainingSummary, write_model_card

        if not self.is_world_process_zero():
            return
        is_adapter = hasattr(self.model, "peft_config")
        method = f"{'LoRA ' if is_adapter else ''}supervised fine-tuning with TRL's `SFTTrainer` (`training/sft_trl.py`)"
        summary = TrainingSummary.from_trainer(self, method=method, datasets=[dataset_name] if dataset_name else [])
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        write_model_card(self.args.output_dir, self.model, training_summary=summary, tags=tags + ["trl", "sft"])

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The micro-batches of one optimizer step; image-loss batches also get the step's image-target count."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples and "image_labels" in batch_samples[0]:
            count = sum(int((batch["image_labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in batch_samples)
            count = torch.tensor(count, device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                count = self.accelerator.gather(count).sum()
            for batch in batch_samples:
                batch["num_image_items_in_batch"] = count
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "image_labels" not in inputs:  # text targets only: TRL's fused LM head and metrics
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

        mode = "train" if self.model.training else "eval"
        inputs = {**inputs, "use_cache": False}
        if num_items_in_batch is not None:
            inputs["num_items_in_batch"] = num_items_in_batch
        outputs = model(**inputs)
        loss = outputs.loss
        # Like `Trainer.compute_loss`: the counts cover every rank, and DDP averages the gradients across ranks
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())

        # This micro-batch's mean image cross-entropy and top-1 accuracy (the loss is normalised by the step's count)
        with torch.no_grad():
            targets = inputs["image_labels"][:, 1:]
            targets = targets[targets != IGNORE_INDEX].to(outputs.image_logits.device)
            summed = torch.stack(
                [
                    torch.nn.functional.cross_entropy(outputs.image_logits.float(), targets, reduction="sum"),
                    (outputs.image_logits.argmax(-1) == targets).sum().float(),
                    torch.tensor(float(targets.numel()), device=targets.device),
                ]
            )
            summed = self.accelerator.gather_for_metrics(summed.unsqueeze(0)).sum(0)
            count = summed[2].clamp(min=1)
            self._metrics[mode]["image_loss"].append((summed[0] / count).item())
            self._metrics[mode]["image_token_accuracy"].append((summed[1] / count).item())
        if mode == "train":
            mask = inputs.get("attention_mask")
            local_tokens = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(local_tokens.reshape(1)).sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss


__all__ = [
    "DEFAULT_LORA_TARGET_MODULES",
    "FULL_FINETUNING_MODULES",
    "JanusProSFTCollator",
    "JanusProSFTTrainer",
    "lora_target_modules",
]
