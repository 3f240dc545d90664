"""
Conversion between this package's format (`model_type: "janus_pro"`, [`JanusProForConditionalGeneration`]) and
transformers' built-in Janus format (`model_type: "janus"`, `transformers.JanusForConditionalGeneration` with
`JanusProcessor`), weights, config and processor, both ways.

The two formats hold the same published Janus-Pro checkpoints, but each config can express architectures the other
cannot (SPEC §2). A conversion never drops such a difference: it refuses with a `ValueError` that names the field.
The weights are carried over exactly (the converted model shares their storage with the input model); every key is
mapped and the key sets are checked to match in full.
"""

import copy
import os
import re
import tempfile

import torch
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusProcessor,
)
from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil
from transformers.utils import cached_file, logging

from .configuration_janus_pro import JanusProConfig
from .utils import SPECIAL_TOKENS, expected_shapes, state_dict_mismatches
from .image_processing_janus_pro import JanusProImageProcessor
from .modeling_janus_pro import JanusProForConditionalGeneration
from .processing_janus_pro import JanusProProcessor


logger = logging.get_logger(__name__)

# The built-in `JanusProcessor` reads these named tokens from its tokenizer (`tokenizer.image_token`, ...).
JANUS_TOKENIZER_TOKENS = {
    "image_token": "<image_placeholder>",
    "boi_token": "<begin_of_image>",
    "eoi_token": "<end_of_image>",
}
# The built-in VQ hard-codes 32 GroupNorm groups and SiLU in its residual blocks.
JANUS_VQ_NORM_GROUPS = 32
JANUS_VQ_ACTIVATIONS = ("silu", "swish")
# SPEC §4: DeepSeek's classifier-free guidance weight, the built-in image generation's default too.
DEFAULT_GUIDANCE_SCALE = 5
# Fields that only record where a config came from; they are not part of the architecture.
PROVENANCE_FIELDS = ("_name_or_path", "transformers_version", "architectures")
CHECKPOINT_DTYPES = ("float32", "bfloat16", "float16")

# Our VQ keys (diffusers.VQModel, below `vq_model.`) -> the built-in VQ keys (below `vqmodel.`), applied in order.
VQ_KEY_RULES = (
    (r"\.mid_block\.resnets\.0\.", ".mid.block_1."),
    (r"\.mid_block\.attentions\.0\.", ".mid.attn_1."),
    (r"\.mid_block\.resnets\.1\.", ".mid.block_2."),
    (r"^encoder\.down_blocks\.(\d+)\.", r"encoder.down.\1."),
    (r"^decoder\.up_blocks\.(\d+)\.", r"decoder.up.\1."),
    (r"\.resnets\.(\d+)\.", r".block.\1."),
    (r"\.attentions\.(\d+)\.", r".attn.\1."),
    (r"\.downsamplers\.0\.", ".downsample."),
    (r"\.upsamplers\.0\.", ".upsample."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
    (r"\.conv_norm_out\.", ".norm_out."),
    (r"(\.attn\.\d+|\.attn_1)\.group_norm\.", r"\1.norm."),
    (r"(\.attn\.\d+|\.attn_1)\.to_(q|k|v)\.", r"\1.\2."),
    (r"(\.attn\.\d+|\.attn_1)\.to_out\.0\.", r"\1.proj_out."),
)
# The built-in VQ attention projections are 1x1 convolutions; diffusers' are linear layers.
VQ_ATTENTION_WEIGHT = re.compile(r"^model\.vqmodel\..*(\.attn\.\d+|\.attn_1)\.(q|k|v|proj_out)\.weight$")


class JanusConversionError(ValueError):
    """A model, config or processor that the target format cannot hold: the message names the field and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------


def _raise_if_problems(problems: list[str], source: str, target: str):
    if problems:
        raise JanusConversionError(
            f"Cannot convert this {source} to {target} without changing the model: "
            + "; ".join(problems)
            + ". Nothing was converted."
        )


def _check_janus_pro_config(config: JanusProConfig) -> list[str]:
    """What in our config the built-in `JanusConfig` cannot express, one message per field."""
    vision, text, vq = config.vision_config, config.text_config, config.vq_config
    problems = []
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
    _raise_if_problems(_check_janus_pro_config(config), "Janus-Pro config", "the built-in `janus` format")
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
    _raise_if_problems(_check_janus_config(config), "built-in `janus` config", "the Janus-Pro format")
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


def _janus_special_token_ids(
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


# ----------------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------------


def _projector_key(name: str, prefix: str) -> str:
    """`layers.0.` -> `fc1.`, `layers.2k.` -> `hidden_layers.{k-1}.` (odd indices are parameter-free activations)."""
    match = re.match(r"layers\.(\d+)\.(.*)", name)
    if match is None or int(match.group(1)) % 2:
        return f"{prefix}.{name}"  # unknown: reported by the key check
    index, rest = int(match.group(1)), match.group(2)
    return f"{prefix}.fc1.{rest}" if index == 0 else f"{prefix}.hidden_layers.{index // 2 - 1}.{rest}"


def janus_pro_key_to_janus(key: str) -> str:
    """The built-in Janus key of one of our state-dict keys (SPEC §2)."""
    if not key.startswith("model."):
        return key  # lm_head
    name = key[len("model.") :]
    if name.startswith("vision_model."):
        return "model." + name.replace(".self_attn.out_proj.", ".self_attn.projection_layer.")
    if name.startswith("aligner."):
        return "model." + _projector_key(name[len("aligner.") :], "aligner")
    if name.startswith("gen_aligner."):
        return "model." + _projector_key(name[len("gen_aligner.") :], "generation_aligner")
    if name.startswith("gen_embed."):
        return "model.generation_embeddings." + name[len("gen_embed.") :]
    if name.startswith("gen_head."):
        name = name.replace("gen_head.output_mlp_projector.", "generation_head.proj_out.")
        return "model." + name.replace("gen_head.vision_head.", "generation_head.vision_head.")
    if name.startswith("vq_model."):
        name = name[len("vq_model.") :]
        for pattern, replacement in VQ_KEY_RULES:
            name = re.sub(pattern, replacement, name)
        return "model.vqmodel." + name
    return key  # language_model.* keeps its names


def _check_keys(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Size], what: str):
    """Refuse missing, unexpected or mis-shaped tensors after mapping, naming them: a partial conversion is a bug."""
    problems = state_dict_mismatches(state_dict, expected)
    if problems:
        raise JanusConversionError(
            f"The {what} does not match the target model after the key mapping: " + "; ".join(problems) + ". The "
            "model's weights do not fit its config, or the key mapping misses these tensors."
        )


def _reshape_vq_attention(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Size]):
    """diffusers' linear VQ attention weights <-> the built-in 1x1 convolutions (same numbers, other shape)."""
    for key, tensor in state_dict.items():
        if key in expected and tensor.shape != expected[key] and tensor.numel() == expected[key].numel():
            if VQ_ATTENTION_WEIGHT.match(key) or VQ_ATTENTION_WEIGHT.match(janus_pro_key_to_janus(key)):
                state_dict[key] = tensor.reshape(expected[key])


def _codebook_is_normalized(codebook: torch.Tensor) -> bool:
    norms = codebook.float().norm(dim=-1)
    tolerance = max(1e-5, 4 * torch.finfo(codebook.dtype).eps)
    return bool(torch.allclose(norms, torch.ones_like(norms), rtol=0, atol=tolerance))


def convert_janus_pro_state_dict_to_janus(
    state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Our state dict under the built-in keys; `expected` holds the built-in model's shapes, checked in full."""
    converted = {janus_pro_key_to_janus(key): tensor for key, tensor in state_dict.items()}
    if len(converted) != len(state_dict):
        raise JanusConversionError("Two Janus-Pro tensors map to the same built-in key; the key mapping is wrong.")
    _reshape_vq_attention(converted, expected)
    _check_keys(converted, expected, "Janus-Pro state dict")
    codebook = converted["model.vqmodel.quantize.embedding.weight"]
    if not _codebook_is_normalized(codebook):
        raise JanusConversionError(
            "`model.vq_model.quantize.embedding.weight` (the VQ codebook) is not L2-normalised. Janus-Pro's VQ uses "
            "normalised codes and the built-in Janus VQ normalises them only when decoding, so the converted model "
            "would encode and decode differently. Normalise the codebook rows first."
        )
    return converted


def convert_janus_state_dict_to_janus_pro(
    state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """
    A built-in state dict under our keys; `expected` holds our model's shapes, checked in full. The codebook is
    L2-normalised when it is not already (the built-in VQ normalises it when decoding, ours stores it normalised).
    """
    to_ours = {janus_pro_key_to_janus(key): key for key in expected}
    if len(to_ours) != len(expected):
        raise JanusConversionError("Two Janus-Pro tensors map to the same built-in key; the key mapping is wrong.")
    unexpected = sorted(set(state_dict) - set(to_ours))
    converted = {to_ours[key]: tensor for key, tensor in state_dict.items() if key in to_ours}
    converted.update({key: state_dict[key] for key in unexpected})  # reported by the key check
    _reshape_vq_attention(converted, expected)
    _check_keys(converted, expected, "built-in Janus state dict")
    codebook_key = "model.vq_model.quantize.embedding.weight"
    if not _codebook_is_normalized(converted[codebook_key]):
        codebook = converted[codebook_key]
        converted[codebook_key] = torch.nn.functional.normalize(codebook.float(), p=2, dim=-1).to(codebook.dtype)
    return converted


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def janus_pro_to_janus(model: JanusProForConditionalGeneration) -> JanusForConditionalGeneration:
    """
    The built-in `transformers.JanusForConditionalGeneration` holding exactly our model's weights, in its dtype.
    The weights share storage with `model` (no copy, so large checkpoints convert without twice the memory).

    The generation config gets what the built-in `generate(generation_mode="image")` needs:
    `generation_kwargs={"boi_token_id": ...}`, the pad id and `guidance_scale=5`.
    """
    if not isinstance(model, JanusProForConditionalGeneration):
        raise TypeError(f"Expected a JanusProForConditionalGeneration, got {type(model).__name__}.")
    config = janus_pro_config_to_janus(model.config)
    expected = expected_shapes(JanusForConditionalGeneration, config)
    state_dict = convert_janus_pro_state_dict_to_janus(model.state_dict(), expected)
    converted = JanusForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=state_dict, dtype=_model_dtype(model)
    )
    generation_config = copy.deepcopy(model.generation_config)
    generation_config.bos_token_id = model.config.text_config.bos_token_id
    generation_config.pad_token_id = model.config.pad_token_id
    generation_config.generation_kwargs = {
        **(getattr(generation_config, "generation_kwargs", None) or {}),
        "boi_token_id": model.config.boi_token_id,
    }
    if generation_config.guidance_scale is None:
        generation_config.guidance_scale = DEFAULT_GUIDANCE_SCALE
    # A generation config marked as derived from the model config loses its extra fields (`generation_kwargs`) on load.
    generation_config._from_model_config = False
    converted.generation_config = generation_config
    return converted.train(model.training)


def janus_to_janus_pro(
    model: JanusForConditionalGeneration, special_token_ids: dict[str, int] | None = None
) -> JanusProForConditionalGeneration:
    """
    Our [`JanusProForConditionalGeneration`] holding exactly the built-in model's weights, in its dtype (sharing
    their storage), except that an un-normalised VQ codebook is stored L2-normalised (what the built-in VQ decodes).

    The built-in config does not record the ids of `<begin_of_image>`, `<end_of_image>` and the pad token; they come
    from `special_token_ids` (keys `boi_token_id`, `eoi_token_id`, `pad_token_id`), else from what our conversion
    stored in its config, else from its generation config. A built-in model with tied word embeddings (the built-in
    default) converts to an untied one whose `lm_head` holds the same numbers.
    """
    if not isinstance(model, JanusForConditionalGeneration):
        raise TypeError(f"Expected a transformers JanusForConditionalGeneration, got {type(model).__name__}.")
    token_ids = _janus_special_token_ids(model.config, model.generation_config, special_token_ids)
    config = janus_config_to_janus_pro(model.config, token_ids)
    if model.config.tie_word_embeddings:
        logger.warning(
            "The built-in Janus model ties `lm_head` to the input embeddings; Janus-Pro keeps `lm_head` as its own "
            "tensor, so the converted model gets a copy of the same numbers (they diverge if you train)."
        )
    expected = expected_shapes(JanusProForConditionalGeneration, config)
    state_dict = dict(model.state_dict())
    lm_head = model.lm_head.weight.detach()
    if lm_head.data_ptr() == model.get_input_embeddings().weight.data_ptr():
        lm_head = lm_head.clone()  # two tensors of ours must not share storage (saving would refuse)
    state_dict["lm_head.weight"] = lm_head
    state_dict = convert_janus_state_dict_to_janus_pro(state_dict, expected)
    converted = JanusProForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=state_dict, dtype=_model_dtype(model)
    )
    generation_config = copy.deepcopy(model.generation_config)
    generation_kwargs = dict(getattr(generation_config, "generation_kwargs", None) or {})
    generation_kwargs.pop("boi_token_id", None)
    if generation_kwargs:
        generation_config.generation_kwargs = generation_kwargs
    elif hasattr(generation_config, "generation_kwargs"):
        del generation_config.generation_kwargs
    if generation_config.guidance_scale not in (None, DEFAULT_GUIDANCE_SCALE):
        logger.warning(
            f"The built-in generation config's `guidance_scale` ({generation_config.guidance_scale}) is not kept: "
            "Janus-Pro's `generate_images` takes it as an argument (default 5)."
        )
    # Janus-Pro's text `generate` must not run transformers' classifier-free guidance on answers.
    generation_config.guidance_scale = None
    if getattr(generation_config, "boi_token_id", None) is not None:
        del generation_config.boi_token_id
    generation_config.pad_token_id = config.pad_token_id
    converted.generation_config = generation_config
    return converted.train(model.training)


# ----------------------------------------------------------------------------------------------------------------
# Processors
# ----------------------------------------------------------------------------------------------------------------


def _image_processor_settings(image_processor) -> dict:
    """The settings both image processors share, read from either."""
    size = image_processor.size
    return {
        "size": {"height": size["height"], "width": size["width"]},
        "min_size": image_processor.min_size,
        "resample": image_processor.resample,
        "do_resize": image_processor.do_resize,
        "do_pad": image_processor.do_pad,
        "do_rescale": image_processor.do_rescale,
        "rescale_factor": image_processor.rescale_factor,
        "do_normalize": image_processor.do_normalize,
        "image_mean": list(image_processor.image_mean),
        "image_std": list(image_processor.image_std),
        "do_convert_rgb": image_processor.do_convert_rgb,
    }


def _reload_tokenizer(tokenizer, **kwargs):
    """A fresh copy of `tokenizer` through its own files (the public way to add named special tokens)."""
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save_pretrained(directory)
        return AutoTokenizer.from_pretrained(directory, **kwargs)


def janus_pro_processor_to_janus(processor: JanusProProcessor) -> JanusProcessor:
    """
    The built-in `JanusProcessor` of our processor: same tokenizer (plus the named `image_token`, `boi_token`,
    `eoi_token` it reads), image settings, `num_image_tokens` and chat template (which carries the default system
    prompt, so `use_default_system_prompt=False`).

    The built-in image processor rounds the resized short side (`round`) where DeepSeek truncates (`int`), so an
    image whose scaled side has a fractional part of .5 or more comes out one pixel taller/wider before padding.
    """
    image_processor = processor.image_processor
    expected_background = tuple(int(mean * 255) for mean in image_processor.image_mean)
    if tuple(image_processor.background_color) != expected_background:
        raise JanusConversionError(
            f"Cannot convert this Janus-Pro processor to the built-in `janus` format: the image processor's "
            f"`background_color` {tuple(image_processor.background_color)} is not `int(image_mean * 255)` "
            f"{expected_background}, from which the built-in image processor derives it."
        )
    janus_image_processor = JanusImageProcessorPil(**_image_processor_settings(image_processor))
    tokenizer = _reload_tokenizer(processor.tokenizer, extra_special_tokens=dict(JANUS_TOKENIZER_TOKENS))
    return JanusProcessor(
        image_processor=janus_image_processor,
        tokenizer=tokenizer,
        chat_template=processor.chat_template,
        use_default_system_prompt=False,
        num_image_tokens=processor.num_image_tokens,
    )


def janus_processor_to_janus_pro(processor: JanusProcessor, chat_template: str | None = None) -> JanusProProcessor:
    """
    Our [`JanusProProcessor`] of a built-in `JanusProcessor`: same tokenizer, image settings (the background colour
    the built-in derives from `image_mean`), `num_image_tokens` and chat template.

    A built-in processor with `use_default_system_prompt=True` prepends the default system prompt to every text,
    which our processor leaves to the chat template: pass `chat_template` (e.g. this package's
    `processing_janus_pro.CHAT_TEMPLATE`, which carries that system prompt) to convert it knowingly.
    """
    if processor.use_default_system_prompt and chat_template is None:
        raise JanusConversionError(
            "Cannot convert this built-in JanusProcessor to the Janus-Pro format: `use_default_system_prompt` is "
            "True (it prepends the system prompt to every text, outside the chat template), which JanusProProcessor "
            "does not do. Pass `chat_template=transformers_janus.processing_janus_pro.CHAT_TEMPLATE` (DeepSeek's "
            "format with that system prompt) or your own template to convert anyway."
        )
    settings = _image_processor_settings(processor.image_processor)
    settings["background_color"] = list(processor.image_processor.background_color)
    image_processor = JanusProImageProcessor(**settings)
    return JanusProProcessor(
        image_processor=image_processor,
        tokenizer=_reload_tokenizer(processor.tokenizer),
        chat_template=chat_template if chat_template is not None else processor.chat_template,
        num_image_tokens=processor.num_image_tokens,
    )


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint directories
# ----------------------------------------------------------------------------------------------------------------


def _has_tokenizer(name_or_path: str | os.PathLike) -> bool:
    return any(
        cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False) is not None
        for filename in ("tokenizer.json", "tokenizer_config.json")
    )


def _check_processor_matches(tokenizer, num_image_tokens: int, config: JanusProConfig, source: str):
    """The processor and the model of a checkpoint must agree on the image token count and the special token ids."""
    problems = []
    if num_image_tokens != config.num_image_tokens:
        problems.append(
            f"the processor expands each image to {num_image_tokens} tokens but the model takes "
            f"{config.num_image_tokens} (`num_image_tokens`)"
        )
    vocab = tokenizer.get_vocab()
    for name, text in SPECIAL_TOKENS.items():
        if text in vocab and vocab[text] != getattr(config, name):
            problems.append(f"`{name}` is {getattr(config, name)} in the model config but {text} has id {vocab[text]}")
    if problems:
        raise JanusConversionError(
            f"The processor and the model of {source} do not belong together: " + "; ".join(problems) + ". Fix "
            "the config (special token ids must be the tokenizer's, not defaults) or pair the model with its own "
            "tokenizer."
        )


def _dtype_kwargs(dtype: str | torch.dtype | None) -> dict:
    """`from_pretrained` keeps the checkpoint's dtype when given none."""
    if dtype is None:
        return {}
    if isinstance(dtype, str):
        if dtype not in CHECKPOINT_DTYPES:
            raise ValueError(f"`dtype` must be one of {list(CHECKPOINT_DTYPES)} or a torch.dtype, got {dtype!r}.")
        dtype = getattr(torch, dtype)
    return {"dtype": dtype}


def convert_janus_pro_to_janus(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    dtype: str | torch.dtype | None = None,
    max_shard_size: str | int = "5GB",
) -> JanusForConditionalGeneration:
    """
    Convert a Janus-Pro checkpoint (ours, or DeepSeek's `multi_modality` one) to the built-in `janus` format in
    `dst_dir`: model, generation config and, when `src_dir` has a tokenizer, the processor.

    Args:
        src_dir: Checkpoint directory or Hub id.
        dst_dir: Output directory.
        dtype: `"float32"`, `"bfloat16"`, `"float16"` or a `torch.dtype`; by default the checkpoint's own.
        max_shard_size: Largest weight file, as `save_pretrained` takes it.

    Returns the converted model.
    """
    model = JanusProForConditionalGeneration.from_pretrained(src_dir, **_dtype_kwargs(dtype))
    converted = janus_pro_to_janus(model)
    if _has_tokenizer(src_dir):
        processor = JanusProProcessor.from_pretrained(src_dir)
        _check_processor_matches(processor.tokenizer, processor.num_image_tokens, model.config, str(src_dir))
        janus_pro_processor_to_janus(processor).save_pretrained(dst_dir)
    else:
        logger.warning(f"{src_dir} has no tokenizer: only the model is converted.")
    converted.save_pretrained(dst_dir, max_shard_size=max_shard_size)
    return converted


def convert_janus_to_janus_pro(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    dtype: str | torch.dtype | None = None,
    max_shard_size: str | int = "5GB",
    chat_template: str | None = None,
) -> JanusProForConditionalGeneration:
    """
    Convert a built-in `janus` checkpoint to the Janus-Pro format in `dst_dir`: model, generation config and, when
    `src_dir` has a tokenizer, the processor. The special token ids the built-in config lacks are read from the
    tokenizer by their text.

    Args:
        src_dir: Checkpoint directory or Hub id.
        dst_dir: Output directory.
        dtype: `"float32"`, `"bfloat16"`, `"float16"` or a `torch.dtype`; by default the checkpoint's own.
        max_shard_size: Largest weight file, as `save_pretrained` takes it.
        chat_template: Replaces the processor's chat template (needed for `use_default_system_prompt=True`, see
            [`janus_processor_to_janus_pro`]).

    Returns the converted model.
    """
    model = JanusForConditionalGeneration.from_pretrained(src_dir, **_dtype_kwargs(dtype))
    processor = JanusProcessor.from_pretrained(src_dir) if _has_tokenizer(src_dir) else None
    special_token_ids = None
    if processor is not None:
        tokenizer = processor.tokenizer
        special_token_ids = {
            name: tokenizer.convert_tokens_to_ids(text)
            for name, text in SPECIAL_TOKENS.items()
            if name != "image_token_id" and text in tokenizer.get_vocab()
        }
    converted = janus_to_janus_pro(model, special_token_ids)
    if processor is not None:
        _check_processor_matches(processor.tokenizer, processor.num_image_tokens, converted.config, str(src_dir))
        janus_processor_to_janus_pro(processor, chat_template=chat_template).save_pretrained(dst_dir)
    else:
        logger.warning(f"{src_dir} has no tokenizer: only the model is converted.")
    converted.save_pretrained(dst_dir, max_shard_size=max_shard_size)
    return converted


__all__ = [
    "JanusConversionError",
    "janus_pro_config_to_janus",
    "janus_config_to_janus_pro",
    "janus_pro_key_to_janus",
    "convert_janus_pro_state_dict_to_janus",
    "convert_janus_state_dict_to_janus_pro",
    "janus_pro_to_janus",
    "janus_to_janus_pro",
    "janus_pro_processor_to_janus",
    "janus_processor_to_janus_pro",
    "convert_janus_pro_to_janus",
    "convert_janus_to_janus_pro",
]
