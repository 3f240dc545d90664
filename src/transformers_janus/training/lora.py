"""
LoRA for Janus-Pro with PEFT: where the adapters go, and the `LoraConfig` that puts them there.

Janus-Pro holds two transformers with Llama-style names: SigLIP (the understanding encoder) has `q_proj`/`k_proj`/
`v_proj` too, so the usual `target_modules=["q_proj", "v_proj"]` also wraps SigLIP's attention (on the tiny fixture:
8 modules instead of the language model's 4). That adapts the image features, which neither a style LoRA (its
prompts hold no image) nor most understanding LoRAs want, and changes what `<image_placeholder>` rows carry for every
other use of the model. The presets here are regular expressions scoped to `model.language_model` (PEFT matches a
string `target_modules` against the full module name with `re.fullmatch`).

The adaptors and the image head can get LoRA on their linears too (`include=("gen_aligner", "gen_head")` for image
generation, `("aligner",)` for understanding): LoRA rather than `modules_to_save` keeps every adapted layer a LoRA
layer, so the pipeline's `set_adapters` weights, `fuse_lora` and `unload_lora_weights` apply to all of it.
`modules_to_save` (a full trainable copy of the module) is accepted as well.
"""

from collections import Counter
from torch import nn


# Linear layers of the language model's decoder layers (Llama names), by preset.
_LANGUAGE_MODEL = r"model\.language_model\.layers\.\d+\."
LORA_TARGET_PRESETS = {
    # Attention and MLP projections of every decoder layer: the usual choice for a LoRA that should learn a lot
    "language_model": _LANGUAGE_MODEL + r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
    # Attention projections only: fewer parameters, a lighter touch
    "language_model_attention": _LANGUAGE_MODEL + r"self_attn\.(q|k|v|o)_proj",
}
# The linears of the parts `include=` can add, by part name (the adaptors' `layers` alternate Linear and GELU, so
# their linears are the even indices).
LORA_EXTRA_MODULES = {
    "aligner": r"model\.aligner\.layers\.\d*[02468]",
    "gen_aligner": r"model\.gen_aligner\.layers\.\d*[02468]",
    "gen_head": r"model\.gen_head\.(output_mlp_projector|vision_head)",
    "lm_head": r"lm_head",
}
# Parts that `modules_to_save` may name (PEFT matches them as suffixes of module names).
MODULES_TO_SAVE_PARTS = ("aligner", "gen_aligner", "gen_head", "gen_embed", "lm_head")


def janus_lora_target_modules(target: str = "language_model", include: tuple[str, ...] | list[str] = ()) -> str:
    """
    The `target_modules` regular expression of a preset (`LORA_TARGET_PRESETS`) plus the linears of the parts in
    `include` (`aligner`, `gen_aligner`, `gen_head`, `lm_head`).
    """
    if target not in LORA_TARGET_PRESETS:
        raise ValueError(f"`target` must be one of {sorted(LORA_TARGET_PRESETS)}, got {target!r}.")
    unknown = sorted(set(include) - set(LORA_EXTRA_MODULES))
    if unknown:
        raise ValueError(f"`include` {unknown} unknown; the parts that take LoRA are {sorted(LORA_EXTRA_MODULES)}.")
    patterns = [LORA_TARGET_PRESETS[target]] + [LORA_EXTRA_MODULES[name] for name in dict.fromkeys(include)]
    return "|".join(f"({pattern})" for pattern in patterns) if len(patterns) > 1 else patterns[0]


def janus_lora_config(
    r: int = 16,
    lora_alpha: int | None = None,
    lora_dropout: float = 0.0,
    target: str = "language_model",
    include: tuple[str, ...] | list[str] = (),
    modules_to_save: tuple[str, ...] | list[str] | None = None,
    **kwargs,
):
    """
    A `peft.LoraConfig` for Janus-Pro: LoRA of rank `r` on the language model (`target` preset) and the parts in
    `include`; `lora_alpha` defaults to `r` (scale 1, so the learning rate does not depend on the rank's choice of
    alpha). `task_type="CAUSAL_LM"`, so the saved adapter loads with `AutoPeftModelForCausalLM`. Other keywords go
    to `LoraConfig`.
    """
    from peft import LoraConfig

    if not isinstance(r, int) or r < 1:
        raise ValueError(f"`r` (the LoRA rank) must be a positive integer, got {r!r}.")
    unknown = sorted(set(modules_to_save or ()) - set(MODULES_TO_SAVE_PARTS))
    if unknown:
        raise ValueError(f"`modules_to_save` {unknown} unknown; pick among {list(MODULES_TO_SAVE_PARTS)}.")
    overlap = sorted(set(modules_to_save or ()) & set(include))
    if overlap:
        raise ValueError(f"{overlap} are in both `include` (LoRA on their linears) and `modules_to_save`; pick one.")
    kwargs.setdefault("task_type", "CAUSAL_LM")
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha if lora_alpha is not None else r,
        lora_dropout=lora_dropout,
        target_modules=janus_lora_target_modules(target, include),
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        **kwargs,
    )


def count_lora_layers(model: nn.Module) -> Counter:
    """How many PEFT adapter layers each part of `model` holds, by part (`language_model`, `vision_model`,
    `gen_head`, ...): a check that an adapter wraps what it should."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    counts = Counter()
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            parts = name.split(".")
            while parts and parts[0] in ("base_model", "model"):
                parts = parts[1:]
            counts[parts[0] if parts else name] += 1
    return counts


__all__ = [
    "LORA_EXTRA_MODULES",
    "LORA_TARGET_PRESETS",
    "count_lora_layers",
    "janus_lora_config",
    "janus_lora_target_modules",
]
