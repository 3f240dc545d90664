"""
Reading checkpoints exactly as DeepSeek published them (`model_type: "multi_modality"`, SPEC §2): their
config is mapped to a [`JanusProConfig`] and their weights renamed/split into ours on the fly, so that
`from_pretrained` works on `deepseek-ai/Janus-Pro-1B`/`-7B` without a conversion step.
"""

import json
import os
import re

import torch
from transformers import PreTrainedConfig
from transformers.utils import cached_file, is_flash_attn_2_available, logging

from .configuration_janus_pro import JanusProConfig
from .utils import CheckpointError, hub_kwargs_from, read_special_token_ids


logger = logging.get_logger(__name__)

DEEPSEEK_MODEL_TYPE = "multi_modality"

# DeepSeek's SigLIP presets (`janus/models/siglip_vit.py`); the checkpoint's `params` may override any entry.
SIGLIP_PRESETS = {
    "siglip_large_patch16_384": {"image_size": 384, "patch_size": 16, "width": 1024, "layers": 24, "heads": 16, "mlp_ratio": 4},
}
# DeepSeek's VQ-16 (`janus/models/vq_model.py`): `ch * ch_mult` channels per level, 2 res-blocks per level.
VQ_PRESETS = {"VQ-16": {"ch": 128, "z_channels": 256, "ch_mult": [1, 1, 2, 2, 4], "image_token_size": 16384, "n_embed": 8}}
SUPPORTED_PROJECTORS = {"mlp_gelu", "linear"}

WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


class DeepSeekCheckpointError(CheckpointError):
    """A DeepSeek-format checkpoint that cannot be read: the message names the file, field or tensor."""


def is_deepseek_config(config_dict: dict) -> bool:
    return config_dict.get("model_type") == DEEPSEEK_MODEL_TYPE


def _component(config_dict: dict, name: str, expected_cls: set[str]) -> dict:
    component = config_dict.get(name)
    if not isinstance(component, dict):
        raise DeepSeekCheckpointError(f"DeepSeek config.json has no `{name}` section; is this a Janus-Pro checkpoint?")
    cls_name = component.get("cls")
    if cls_name not in expected_cls:
        raise DeepSeekCheckpointError(
            f"DeepSeek config.json: `{name}.cls` is {cls_name!r}, which Janus-Pro does not use (expected one of "
            f"{sorted(expected_cls)}). This checkpoint is not a Janus-Pro model this package can load."
        )
    return component.get("params", {})


def _projector_depth(params: dict, name: str) -> int:
    projector_type = params.get("projector_type", "mlp_gelu")
    if projector_type not in SUPPORTED_PROJECTORS:
        raise DeepSeekCheckpointError(
            f"DeepSeek config.json: `{name}.params.projector_type` {projector_type!r} is not supported (Janus-Pro "
            f"uses 'mlp_gelu'; supported: {sorted(SUPPORTED_PROJECTORS)})."
        )
    return 1 if projector_type == "linear" else int(params.get("depth", 2))


def _vision_config(params: dict) -> dict:
    model_name = params.get("model_name", "siglip_large_patch16_384")
    if model_name not in SIGLIP_PRESETS:
        raise DeepSeekCheckpointError(
            f"DeepSeek config.json: `vision_config.params.model_name` {model_name!r} is unknown (known: "
            f"{sorted(SIGLIP_PRESETS)})."
        )
    if params.get("select_layer", -1) != -1 or params.get("select_feature", "same") != "same":
        raise DeepSeekCheckpointError(
            "DeepSeek config.json: only `select_layer: -1` and `select_feature: 'same'` (all SigLIP layers, every "
            f"patch) are supported, got select_layer={params.get('select_layer')!r}, "
            f"select_feature={params.get('select_feature')!r}."
        )
    arch = {**SIGLIP_PRESETS[model_name], **{k: v for k, v in params.items() if k in SIGLIP_PRESETS[model_name]}}
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": arch["width"],
        "intermediate_size": int(arch["width"] * arch["mlp_ratio"]),
        "num_hidden_layers": arch["layers"],
        "num_attention_heads": arch["heads"],
        "image_size": arch["image_size"],
        "patch_size": arch["patch_size"],
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "vision_use_head": False,
    }


def _vq_config(params: dict) -> dict:
    arch = {**VQ_PRESETS["VQ-16"], **params}
    encoder_mult = list(params.get("encoder_ch_mult", arch["ch_mult"]))
    decoder_mult = list(params.get("decoder_ch_mult", arch["ch_mult"]))
    if encoder_mult != decoder_mult:
        raise DeepSeekCheckpointError(
            f"DeepSeek config.json: `gen_vision_config` has encoder_ch_mult {encoder_mult} but decoder_ch_mult "
            f"{decoder_mult}; diffusers' VQModel (our VQ tokenizer) needs the same channels for both."
        )
    return {
        "block_out_channels": [arch["ch"] * mult for mult in encoder_mult],
        "latent_channels": arch["z_channels"],
        "num_vq_embeddings": arch["image_token_size"],
        "vq_embed_dim": arch["n_embed"],
    }


def _text_config(language_config: dict) -> dict:
    text_config = {"model_type": "llama", **language_config}
    text_config.pop("torch_dtype", None)
    text_config.pop("dtype", None)
    attn_implementation = text_config.pop("_attn_implementation", None)
    if attn_implementation == "flash_attention_2" and not is_flash_attn_2_available():
        logger.info("Ignoring the checkpoint's `flash_attention_2` request: flash-attn is not installed; using SDPA.")
    elif attn_implementation is not None:
        text_config["_attn_implementation"] = attn_implementation
    return text_config


def deepseek_config_to_janus_pro_dict(config_dict: dict, special_token_ids: dict[str, int] | None = None) -> dict:
    """Map DeepSeek's `multi_modality` config.json to the keyword arguments of [`JanusProConfig`]."""
    vision_params = _component(config_dict, "vision_config", {"CLIPVisionTower"})
    aligner_params = _component(config_dict, "aligner_config", {"MlpProjector"})
    vq_params = _component(config_dict, "gen_vision_config", set(VQ_PRESETS))
    gen_aligner_params = _component(config_dict, "gen_aligner_config", {"MlpProjector"})
    gen_head_params = _component(config_dict, "gen_head_config", {"vision_head"})
    if "language_config" not in config_dict:
        raise DeepSeekCheckpointError("DeepSeek config.json has no `language_config` section.")

    vision_config = _vision_config(vision_params)
    text_config = _text_config(config_dict["language_config"])
    vq_config = _vq_config(vq_params)
    if gen_head_params.get("image_token_size", vq_config["num_vq_embeddings"]) != vq_config["num_vq_embeddings"]:
        raise DeepSeekCheckpointError(
            f"DeepSeek config.json: `gen_head_config.params.image_token_size` ({gen_head_params['image_token_size']}) "
            f"differs from the VQ codebook size ({vq_config['num_vq_embeddings']})."
        )
    result = {
        "model_type": "janus_pro",
        "vision_config": vision_config,
        "text_config": text_config,
        "vq_config": vq_config,
        "aligner_depth": _projector_depth(aligner_params, "aligner_config"),
        "gen_aligner_depth": _projector_depth(gen_aligner_params, "gen_aligner_config"),
        "image_head_hidden_size": gen_head_params.get("image_token_embed", text_config.get("hidden_size")),
        **(special_token_ids or {}),
    }
    dtype = config_dict.get("torch_dtype", config_dict.get("dtype"))
    if dtype is not None:
        result["dtype"] = dtype
    return result


class DeepSeekJanusConfig(PreTrainedConfig):
    """
    Reader of DeepSeek's `multi_modality` config.json, registered with `AutoConfig`: loading one gives a
    [`JanusProConfig`], so every Auto class then resolves to this package's classes.
    """

    model_type = DEEPSEEK_MODEL_TYPE

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        janus_pro_dict = cls.to_janus_pro_dict(config_dict, kwargs.get("name_or_path"), **hub_kwargs_from(kwargs))
        return JanusProConfig.from_dict(janus_pro_dict, **kwargs)

    @classmethod
    def to_janus_pro_dict(cls, config_dict: dict, source: str | os.PathLike | None = None, **kwargs) -> dict:
        """`config_dict` mapped to [`JanusProConfig`]'s fields, special token ids read from `source`'s tokenizer."""
        special_token_ids = read_special_token_ids(source, **hub_kwargs_from(kwargs)) if source else {}
        return deepseek_config_to_janus_pro_dict(config_dict, special_token_ids)


# ----------------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------------

def _rename_vq_key(key: str) -> str:
    """DeepSeek VQ-16 key (without the `gen_vision_model.` prefix) -> `diffusers.VQModel` key (SPEC §1)."""
    match = re.match(r"(encoder|decoder)\.conv_blocks\.(\d+)\.(.*)", key)
    if match:
        part, level, rest = match.groups()
        blocks = "down_blocks" if part == "encoder" else "up_blocks"
        rest = re.sub(r"^res\.(\d+)\.", r"resnets.\1.", rest)
        rest = re.sub(r"^attn\.(\d+)\.", r"attentions.\1.", rest)
        rest = re.sub(r"^(downsample|upsample)\.conv\.", lambda m: f"{m.group(1)}rs.0.conv.", rest)
        key = f"{part}.{blocks}.{level}.{rest}"
    key = re.sub(r"^(encoder|decoder)\.mid\.0\.", r"\1.mid_block.resnets.0.", key)
    key = re.sub(r"^(encoder|decoder)\.mid\.1\.", r"\1.mid_block.attentions.0.", key)
    key = re.sub(r"^(encoder|decoder)\.mid\.2\.", r"\1.mid_block.resnets.1.", key)
    key = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", key)
    key = key.replace(".nin_shortcut.", ".conv_shortcut.")
    if ".attentions." in key:
        key = re.sub(r"\.norm\.(weight|bias)$", r".group_norm.\1", key)
        key = re.sub(r"\.(q|k|v)\.(weight|bias)$", r".to_\1.\2", key)
        key = re.sub(r"\.proj_out\.(weight|bias)$", r".to_out.0.\1", key)
    return key


def convert_deepseek_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """
    Rename and split DeepSeek's weights into [`JanusProForConditionalGeneration`]'s keys: SigLIP `qkv` split in
    three, the VQ key map, the codebook L2-normalised, and the unused `attn_pool.*` / `codebook_used` dropped.
    """
    converted = {}
    for key, tensor in state_dict.items():
        if key.startswith("vision_model.vision_tower."):
            name = key[len("vision_model.vision_tower.") :]
            if name.startswith("attn_pool."):
                continue
            prefix = "model.vision_model."
            block = re.match(r"blocks\.(\d+)\.(.*)", name)
            if name == "pos_embed":
                converted[prefix + "embeddings.position_embedding.weight"] = tensor[0]
            elif name.startswith("patch_embed.proj."):
                converted[prefix + "embeddings.patch_embedding." + name.split(".")[-1]] = tensor
            elif name.startswith("norm."):
                converted[prefix + "post_layernorm." + name.split(".")[-1]] = tensor
            elif block:
                layer, rest = block.groups()
                layer_prefix = f"{prefix}encoder.layers.{layer}."
                if rest.startswith("attn.qkv."):
                    suffix = rest.split(".")[-1]
                    for proj, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                        converted[f"{layer_prefix}self_attn.{proj}.{suffix}"] = part.contiguous()
                else:
                    rest = rest.replace("attn.proj.", "self_attn.out_proj.")
                    rest = rest.replace("norm1.", "layer_norm1.").replace("norm2.", "layer_norm2.")
                    converted[layer_prefix + rest] = tensor
            else:
                converted[prefix + name] = tensor  # unknown: reported by the shape/key check
        elif key.startswith("gen_vision_model."):
            name = key[len("gen_vision_model.") :]
            if name == "quantize.codebook_used":
                continue
            new_name = _rename_vq_key(name)
            if ".attentions." in new_name and tensor.ndim == 4:
                tensor = tensor[:, :, 0, 0]  # 1x1 conv -> linear
            if new_name == "quantize.embedding.weight":
                tensor = torch.nn.functional.normalize(tensor.float(), p=2, dim=-1).to(tensor.dtype)
            converted["model.vq_model." + new_name] = tensor
        elif key.startswith("language_model.model."):
            converted["model.language_model." + key[len("language_model.model.") :]] = tensor
        elif key == "language_model.lm_head.weight":
            converted["lm_head.weight"] = tensor
        else:
            converted["model." + key] = tensor  # aligner, gen_aligner, gen_head, gen_embed keep their names
    return converted


def resolve_weight_files(name_or_path: str | os.PathLike, **hub_kwargs) -> list[str]:
    """The weight files of a checkpoint: safetensors preferred, single or sharded with an index."""
    for filename in WEIGHT_FILES:
        resolved = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        if resolved is None:
            continue
        if not filename.endswith(".index.json"):
            return [resolved]
        with open(resolved, encoding="utf-8") as handle:
            weight_map = json.load(handle).get("weight_map", {})
        shards = sorted(set(weight_map.values()))
        return [cached_file(name_or_path, shard, **hub_kwargs) for shard in shards]
    raise DeepSeekCheckpointError(
        f"No weights found in {name_or_path}: expected one of {list(WEIGHT_FILES)}."
    )


def load_weight_file(path: str) -> dict[str, torch.Tensor]:
    """Load one weight file (`.bin` only with `weights_only=True`), naming the file when it is unreadable."""
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:
            raise DeepSeekCheckpointError(
                f"Cannot read the weight file {path} ({error}); it is probably truncated or corrupted: download it again."
            ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise DeepSeekCheckpointError(
            f"Cannot read the weight file {path} ({error}); it is probably truncated or corrupted: download it again."
        ) from error


def load_deepseek_state_dict(name_or_path: str | os.PathLike, **hub_kwargs) -> dict[str, torch.Tensor]:
    """All of a DeepSeek-format checkpoint's weights, already converted to this package's keys."""
    state_dict = {}
    for path in resolve_weight_files(name_or_path, **hub_kwargs):
        state_dict.update(load_weight_file(path))
    return convert_deepseek_state_dict(state_dict)
