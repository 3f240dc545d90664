"""
State dicts between this package's keys and transformers' built-in Janus keys (SPEC §2), both ways: every key is
mapped, the VQ attention weights are reshaped (linear <-> 1x1 convolution), and the key sets are checked in full.
"""

import re

import torch

from ..utils import check_state_dict_matches
from .checks import JanusConversionError


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
    check_state_dict_matches(
        converted, expected, "the Janus-Pro state dict mapped to the built-in keys", JanusConversionError
    )
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
    check_state_dict_matches(
        converted, expected, "the built-in Janus state dict mapped to Janus-Pro keys", JanusConversionError
    )
    codebook_key = "model.vq_model.quantize.embedding.weight"
    if not _codebook_is_normalized(converted[codebook_key]):
        codebook = converted[codebook_key]
        converted[codebook_key] = torch.nn.functional.normalize(codebook.float(), p=2, dim=-1).to(codebook.dtype)
    return converted



__all__ = ["janus_pro_key_to_janus", "convert_janus_pro_state_dict_to_janus", "convert_janus_state_dict_to_janus_pro"]
