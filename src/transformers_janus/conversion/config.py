"""
Configs between this package's format ([`JanusProConfig`]) and transformers' built-in `JanusConfig`, both ways.

Each config can express architectures the other cannot; a conversion never drops such a difference: it refuses with
a [`JanusConversionError`] that names every field at once.
"""

from transformers import GenerationConfig, JanusConfig

from ..configuration_janus_pro import JanusProConfig
from ..utils import SPECIAL_TOKENS
from .checks import JanusConversionError, raise_if_problems


# The built-in VQ hard-codes 32 GroupNorm groups and SiLU in its residual blocks.
JANUS_VQ_NORM_GROUPS = 32
JANUS_VQ_ACTIVATIONS = ("silu", "swish")
# Fields that only record where a config came from; they are not part of the architecture.
PROVENANCE_FIELDS = ("_name_or_path", "transformers_version", "architectures")


def _check_janus_pro_config(config: JanusProConfig) -> list[str]:
    """What in our config the built-in `JanusConfig` cannot express, one message per field."""
    vision, text, vq = config.vision_config, config.text_config, config.vq_config
    problems = []
    if config.understanding_encoder != "siglip":
        problems.append(
            f"`understanding_encoder` is {config.understanding_encoder!r}; the built-in format always understands "
            "through SigLIP and its adaptor ('siglip')"
        )
    if config.image_head_hidden_size != text.hidden_size:
        problems.append(
            f"`image_head_hidden_size` ({config.image_head_hidden_size}) differs from the generation adaptor's output "
            f"width (`text_config.hidden_size`, {text.hidden_size}); the built-in format has one "
            "`vq_config.projection_dim` for both"
        )
    if vision.hidden_act != config.projector_hidden_act:
        problems.append(
            f"`vision_config.hidden_act` ({vision.hidden_act!r}) differs from `projector_hidden_act` "
            f"({config.projector_hidden_act!r}); the built-in format uses `vision_config.hidden_act` for both SigLIP "
            "and the understanding adaptor"
        )
    if getattr(vision, "vision_use_head", False):
        problems.append("`vision_config.vision_use_head` is True; the built-in vision model has no pooling head")
    if getattr(config, "select_layer", -1) != -1:
        problems.append(
            f"`select_layer` is {config.select_layer}; the built-in format always uses SigLIP's last layer (-1)"
        )
    ratio = vision.intermediate_size / vision.hidden_size
    if int(vision.hidden_size * ratio) != vision.intermediate_size:
        problems.append(
            f"`vision_config.intermediate_size` ({vision.intermediate_size}) is not expressible as "
            f"`hidden_size * mlp_ratio` of the built-in vision config"
        )
    if vq.norm_num_groups != JANUS_VQ_NORM_GROUPS:
        problems.append(
            f"`vq_config.norm_num_groups` is {vq.norm_num_groups}; the built-in VQ always uses {JANUS_VQ_NORM_GROUPS}"
        )
    if vq.act_fn not in JANUS_VQ_ACTIVATIONS:
        problems.append(f"`vq_config.act_fn` is {vq.act_fn!r}; the built-in VQ always uses 'silu'")
    base = vq.block_out_channels[0]
    if any(channels % base for channels in vq.block_out_channels):
        problems.append(
            f"`vq_config.block_out_channels` {list(vq.block_out_channels)} are not whole multiples of the first "
            f"level's {base}; the built-in VQ stores `base_channels` and integer `channel_multiplier`s"
        )
    vq_grid = vision.image_size // vq.downsample_factor
    siglip_grid = vision.image_size // vision.patch_size
    if vq_grid != siglip_grid:
        problems.append(
            f"the VQ token grid ({vq_grid}x{vq_grid}: image_size {vision.image_size} / VQ downsampling "
            f"{vq.downsample_factor}) differs from the SigLIP grid ({siglip_grid}x{siglip_grid}: image_size / "
            f"`vision_config.patch_size` {vision.patch_size}); the built-in VQ derives its grid from SigLIP's"
        )
    if config.num_image_tokens != siglip_grid * siglip_grid:
        problems.append(
            f"`num_image_tokens` ({config.num_image_tokens}) is not the SigLIP grid squared "
            f"({siglip_grid * siglip_grid})"
        )
    return problems


def janus_pro_config_to_janus(config: JanusProConfig) -> JanusConfig:
    """
    The built-in `JanusConfig` of one of our configs. The special token ids ride along as extra attributes
    (`boi_token_id`, `eoi_token_id`, `pad_token_id`) so that converting back needs no tokenizer.
    """
    raise_if_problems(_check_janus_pro_config(config), "Janus-Pro config", "the built-in `janus` format")
    vision, text, vq = config.vision_config, config.text_config, config.vq_config
    base = vq.block_out_channels[0]
    vision_config = {
        "hidden_size": vision.hidden_size,
        "num_hidden_layers": vision.num_hidden_layers,
        "num_attention_heads": vision.num_attention_heads,
        "num_channels": vision.num_channels,
        "image_size": vision.image_size,
        "patch_size": vision.patch_size,
        "hidden_act": vision.hidden_act,
        "layer_norm_eps": vision.layer_norm_eps,
        "attention_dropout": vision.attention_dropout,
        "mlp_ratio": vision.intermediate_size / vision.hidden_size,
        "attention_bias": True,
        "hidden_dropout_rate": 0.0,
        "projection_dim": text.hidden_size,
        "projection_dropout": 0.0,
        "use_qk_norm": False,
        "depth": config.aligner_depth,
        "num_image_tokens": config.num_image_tokens,
    }
    vq_config = {
        "embed_dim": vq.vq_embed_dim,
        "num_embeddings": vq.num_vq_embeddings,
        "double_latent": False,
        "latent_channels": vq.latent_channels,
        "in_channels": vq.in_channels,
        "out_channels": vq.out_channels,
        "base_channels": base,
        "channel_multiplier": [channels // base for channels in vq.block_out_channels],
        "num_res_blocks": vq.layers_per_block,
        "dropout": 0.0,
        "initializer_range": vq.initializer_range,
        "projection_dim": text.hidden_size,
        "num_hidden_layers": config.gen_aligner_depth,
        "hidden_act": config.projector_hidden_act,
        "image_token_embed_dim": text.hidden_size,
    }
    text_config = {k: v for k, v in text.to_dict().items() if k not in PROVENANCE_FIELDS}
    extra = {"dtype": config.dtype} if getattr(config, "dtype", None) is not None else {}
    return JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=config.image_token_id,
        tie_word_embeddings=config.tie_word_embeddings,
        boi_token_id=config.boi_token_id,
        eoi_token_id=config.eoi_token_id,
        pad_token_id=config.pad_token_id,
        **extra,
    )


def _check_janus_config(config: JanusConfig) -> list[str]:
    """What in a built-in `JanusConfig` our config cannot express, one message per field."""
    vision, text, vq = config.vision_config, config.text_config, config.vq_config
    problems = []
    if vision.use_qk_norm:
        problems.append("`vision_config.use_qk_norm` is True; SigLIP has no query/key LayerNorm")
    if not vision.attention_bias:
        problems.append("`vision_config.attention_bias` is False; SigLIP's query/key/value projections have biases")
    for name in ("hidden_dropout_rate", "projection_dropout"):
        if getattr(vision, name):
            problems.append(f"`vision_config.{name}` is {getattr(vision, name)}; SigLIP has no such dropout")
    if vq.dropout:
        problems.append(f"`vq_config.dropout` is {vq.dropout}; our VQ (diffusers.VQModel) has no dropout")
    if vq.double_latent:
        problems.append("`vq_config.double_latent` is True; our VQ encoder outputs `latent_channels` channels")
    for name in ("image_size", "patch_size"):
        value = getattr(vision, name)
        if isinstance(value, (list, tuple)) and len(set(value)) != 1:
            problems.append(f"`vision_config.{name}` is {list(value)}; SigLIP takes square images and patches")
    if int(vision.hidden_size * vision.mlp_ratio) != vision.hidden_size * vision.mlp_ratio:
        problems.append(
            f"`vision_config.mlp_ratio` ({vision.mlp_ratio}) times `hidden_size` ({vision.hidden_size}) is not a "
            "whole MLP width"
        )
    if vision.hidden_act != vq.hidden_act:
        problems.append(
            f"`vision_config.hidden_act` ({vision.hidden_act!r}) differs from `vq_config.hidden_act` "
            f"({vq.hidden_act!r}); Janus-Pro uses one `projector_hidden_act` for both adaptors and the image head, "
            "and the built-in format applies the vision one to the understanding adaptor"
        )
    if vq.projection_dim != text.hidden_size or vq.image_token_embed_dim != text.hidden_size:
        problems.append(
            f"`vq_config.projection_dim` ({vq.projection_dim}) and `vq_config.image_token_embed_dim` "
            f"({vq.image_token_embed_dim}) must both equal `text_config.hidden_size` ({text.hidden_size}): the "
            "generation adaptor feeds the language model and the image head reads it"
        )
    if vision.projection_dim != text.hidden_size:
        problems.append(
            f"`vision_config.projection_dim` ({vision.projection_dim}) differs from `text_config.hidden_size` "
            f"({text.hidden_size}); the understanding adaptor feeds the language model"
        )
    if list(vq.channel_multiplier)[0] != 1:
        problems.append(
            f"`vq_config.channel_multiplier` starts with {vq.channel_multiplier[0]}, not 1; our VQ's first level "
            "keeps the width of its input convolution"
        )
    image_size, patch_size = _square(vision.image_size), _square(vision.patch_size)
    grid = image_size // patch_size
    if vision.num_image_tokens != grid * grid:
        problems.append(
            f"`vision_config.num_image_tokens` ({vision.num_image_tokens}) is not the SigLIP grid squared "
            f"({grid}x{grid} for image_size {image_size}, patch_size {patch_size})"
        )
    vq_grid = image_size // 2 ** (len(vq.channel_multiplier) - 1)
    if vq_grid != grid:
        problems.append(
            f"the VQ token grid ({vq_grid}x{vq_grid}: image_size {image_size} / VQ downsampling "
            f"{2 ** (len(vq.channel_multiplier) - 1)}) differs from the SigLIP grid ({grid}x{grid})"
        )
    return problems


def _square(value) -> int:
    return value[0] if isinstance(value, (list, tuple)) else value


def janus_config_to_janus_pro(config: JanusConfig, special_token_ids: dict[str, int] | None = None) -> JanusProConfig:
    """
    Our [`JanusProConfig`] of a built-in `JanusConfig`. `special_token_ids` (`boi_token_id`, `eoi_token_id`,
    `pad_token_id`) fill what the built-in config does not record; see [`janus_to_janus_pro`].
    """
    raise_if_problems(_check_janus_config(config), "built-in `janus` config", "the Janus-Pro format")
    vision, text, vq = config.vision_config, config.text_config, config.vq_config
    vision_config = {
        "model_type": "siglip_vision_model",
        "hidden_size": vision.hidden_size,
        "intermediate_size": int(vision.hidden_size * vision.mlp_ratio),
        "num_hidden_layers": vision.num_hidden_layers,
        "num_attention_heads": vision.num_attention_heads,
        "num_channels": vision.num_channels,
        "image_size": _square(vision.image_size),
        "patch_size": _square(vision.patch_size),
        "hidden_act": vision.hidden_act,
        "layer_norm_eps": vision.layer_norm_eps,
        "attention_dropout": vision.attention_dropout,
        "vision_use_head": False,
    }
    vq_config = {
        "in_channels": vq.in_channels,
        "out_channels": vq.out_channels,
        "block_out_channels": [vq.base_channels * multiplier for multiplier in vq.channel_multiplier],
        "layers_per_block": vq.num_res_blocks,
        "act_fn": "silu",
        "latent_channels": vq.latent_channels,
        "num_vq_embeddings": vq.num_embeddings,
        "vq_embed_dim": vq.embed_dim,
        "norm_num_groups": JANUS_VQ_NORM_GROUPS,
        "initializer_range": vq.initializer_range,
    }
    text_config = {k: v for k, v in text.to_dict().items() if k not in PROVENANCE_FIELDS}
    extra = {"dtype": config.dtype} if getattr(config, "dtype", None) is not None else {}
    return JanusProConfig(
        vision_config=vision_config,
        text_config=text_config,
        vq_config=vq_config,
        aligner_depth=vision.depth,
        gen_aligner_depth=vq.num_hidden_layers,
        projector_hidden_act=vq.hidden_act,
        image_head_hidden_size=vq.projection_dim,
        num_image_tokens=vision.num_image_tokens,
        image_token_id=config.image_token_id,
        tie_word_embeddings=False,
        **(special_token_ids or {}),
        **extra,
    )


def janus_special_token_ids(
    config: JanusConfig, generation_config: GenerationConfig | None, special_token_ids: dict[str, int] | None
) -> dict[str, int]:
    """
    `boi_token_id`, `eoi_token_id` and `pad_token_id` of a built-in model: given ones first, then the extra
    attributes our conversion writes into its config, then its generation config (where the built-in image
    generation reads `generation_kwargs["boi_token_id"]` and `pad_token_id`).
    """
    generation_config = generation_config or GenerationConfig()
    generation_kwargs = getattr(generation_config, "generation_kwargs", None) or {}
    candidates = {
        "boi_token_id": [getattr(config, "boi_token_id", None), generation_kwargs.get("boi_token_id"),
                         getattr(generation_config, "boi_token_id", None)],
        "eoi_token_id": [getattr(config, "eoi_token_id", None), generation_kwargs.get("eoi_token_id")],
        "pad_token_id": [getattr(config, "pad_token_id", None), generation_config.pad_token_id,
                         getattr(config.text_config, "pad_token_id", None)],
    }
    found = dict(special_token_ids or {})
    for name, values in candidates.items():
        if found.get(name) is None:
            found[name] = next((value for value in values if value is not None), None)
    missing = [name for name in candidates if found.get(name) is None]
    if missing:
        raise JanusConversionError(
            f"The built-in Janus model does not record {missing} (the ids of "
            f"{[SPECIAL_TOKENS[name] for name in missing]}), which the Janus-Pro config needs. Pass them, e.g. "
            "`janus_to_janus_pro(model, special_token_ids={name: tokenizer.convert_tokens_to_ids(text)})`, or "
            "convert the checkpoint directory with `convert_janus_to_janus_pro`, which reads them from its tokenizer."
        )
    return {name: int(found[name]) for name in candidates}


__all__ = ["janus_pro_config_to_janus", "janus_config_to_janus_pro", "janus_special_token_ids"]
