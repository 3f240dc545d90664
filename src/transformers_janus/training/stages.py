"""
The three training stages of Janus-Pro (paper Table 2, SPEC §5): which parts train, the learning rate and warm-up,
the mix of understanding : text : generation data, and the freeze policy that applies them to a model.

Stage I trains the two adaptors (`aligner`, `gen_aligner`), the image head (`gen_head`) and the generation input
embedding (`gen_embed`). The paper names only "adaptors + image head", but `gen_embed` is not part of either encoder:
it is the multimodal model's own table of code embeddings (the VQ tokenizer's codebook is `vq_model.quantize`), new
with the adaptors and with no pretrained values anywhere, and the generation adaptor reads nothing else, so freezing
it would leave stage I's generation path fed by a fixed random table. Stages II and III train it too.
"""

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class StageDefaults:
    """What one stage trains and how: trainable parameter prefixes, optimizer schedule and data mix (paper values)."""

    stage: int
    trainable_modules: tuple[str, ...]
    learning_rate: float
    warmup_steps: int
    mix_ratio: tuple[int, int, int]  # understanding : text : generation
    paper_max_steps: int
    paper_global_batch_size: int


# Prefixes of `JanusProForConditionalGeneration.named_parameters()`.
_ADAPTORS_AND_IMAGE_HEAD = ("model.aligner.", "model.gen_aligner.", "model.gen_head.", "model.gen_embed.")
_LANGUAGE_MODEL = ("model.language_model.", "lm_head.")
STAGES = {
    1: StageDefaults(
        stage=1,
        trainable_modules=_ADAPTORS_AND_IMAGE_HEAD,
        learning_rate=1e-3,
        warmup_steps=600,
        mix_ratio=(1, 0, 3),
        paper_max_steps=20_000,
        paper_global_batch_size=256,
    ),
    2: StageDefaults(
        stage=2,
        trainable_modules=_ADAPTORS_AND_IMAGE_HEAD + _LANGUAGE_MODEL,
        learning_rate=1e-4,
        warmup_steps=5000,
        mix_ratio=(2, 3, 5),
        paper_max_steps=360_000,
        paper_global_batch_size=512,
    ),
    3: StageDefaults(
        stage=3,
        trainable_modules=("model.vision_model.",) + _ADAPTORS_AND_IMAGE_HEAD + _LANGUAGE_MODEL,
        learning_rate=4e-5,
        warmup_steps=0,
        mix_ratio=(5, 1, 4),
        paper_max_steps=80_000,
        paper_global_batch_size=128,
    ),
}

# The paper's optimizer, the same in every stage.
ADAM_BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0


def get_stage(stage: int) -> StageDefaults:
    """The defaults of `stage` (1, 2 or 3)."""
    if stage not in STAGES:
        raise ValueError(f"`stage` must be 1, 2 or 3 (SPEC §5), got {stage!r}.")
    return STAGES[stage]


def apply_freeze_policy(model: nn.Module, trainable_modules: tuple[str, ...] | list[str]) -> list[str]:
    """
    Set `requires_grad` on every parameter of `model`: True exactly for those whose name starts with one of
    `trainable_modules` (e.g. a stage's `StageDefaults.trainable_modules`). Returns the trainable names.

    A prefix that matches no parameter is an error (a typo would otherwise freeze a part silently).
    """
    names = [name for name, _ in model.named_parameters()]
    unmatched = [prefix for prefix in trainable_modules if not any(name.startswith(prefix) for name in names)]
    if unmatched:
        top_level = sorted({".".join(name.split(".")[: 2 if name.startswith("model.") else 1]) + "." for name in names})
        raise ValueError(
            f"`trainable_modules` {unmatched} match no parameter of the model; prefixes of its parameters are "
            f"{top_level}."
        )
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(tuple(trainable_modules)))
        if parameter.requires_grad:
            trainable.append(name)
    return trainable
