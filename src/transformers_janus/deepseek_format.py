"""
Reading checkpoints exactly as DeepSeek published them (`model_type: "multi_modality"`, SPEC §2), so that
`from_pretrained` works on `deepseek-ai/Janus-Pro-1B`/`-7B` without a conversion step:

- the config: [`DeepSeekJanusConfig`], registered with `AutoConfig`, maps DeepSeek's config.json to a
  [`JanusProConfig`] (which reads it through its generic `to_janus_pro_dict` hook);
- the weights: a checkpoint conversion mapping of transformers' own loader (`deepseek_weight_conversions`,
  registered for `janus_pro`) renames and splits DeepSeek's tensors while they load;
- the checks of every load, in any format, that the model's loading hooks call: weight files are read safely and
  named when damaged, and tensors that do not fit the model are refused by name.
"""

import json
import os
import threading
from contextlib import contextmanager
import re

import torch
from transformers import PreTrainedConfig
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import Chunk, ConversionOps, WeightConverter, WeightRenaming, WeightTransform
from transformers.utils import is_flash_attn_2_available, logging

from .configuration_janus_pro import JanusProConfig
from .utils import CheckpointError, checkpoint_format, hub_kwargs_from, read_special_token_ids


logger = logging.get_logger(__name__)

DEEPSEEK_MODEL_TYPE = "multi_modality"

# DeepSeek's SigLIP presets (`janus/models/siglip_vit.py`); the checkpoint's `params` may override any entry.
SIGLIP_PRESETS = {
    "siglip_large_patch16_384": {"image_size": 384, "patch_size": 16, "width": 1024, "layers": 24, "heads": 16, "mlp_ratio": 4},
}
# DeepSeek's VQ-16 (`janus/models/vq_model.py`): `ch * ch_mult` channels per level, 2 res-blocks per level.
VQ_PRESETS = {"VQ-16": {"ch": 128, "z_channels": 256, "ch_mult": [1, 1, 2, 2, 4], "image_token_size": 16384, "n_embed": 8}}
SUPPORTED_PROJECTORS = {"mlp_gelu", "linear"}


class DeepSeekCheckpointError(CheckpointError):
    """A DeepSeek-format checkpoint that cannot be read: the message names the file, field or tensor."""


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
# Weights: a checkpoint conversion mapping of transformers' loader (`core_model_loading`)
# ----------------------------------------------------------------------------------------------------------------
#
# DeepSeek's weights load through `PreTrainedModel.from_pretrained` itself: the transforms below are registered for
# `model_type: "janus_pro"` and rename/split DeepSeek's keys while the loader reads the files (safetensors or `.bin`,
# single or sharded, any `dtype`/`device_map`). They are one-way: transformers reverts a model's conversion mapping
# when it saves, which would write DeepSeek's keys (and the codebook L2 normalisation has no inverse), so their
# reverse is a transform that matches nothing and a saved model is always in our format.
#
# Each transform matches only names that DeepSeek's checkpoints have and ours never have (`vision_model.vision_tower.`,
# `gen_vision_model.`, `language_model.model.`, `language_model.lm_head.`), so loading our own format is untouched.
# The renaming produces the headless model's names; the loader adds the `model.` prefix for the full model.
# Tensors that need more than a new name keep a DeepSeek leaf name after the renaming (`attn.qkv`, `pos_embed`, the
# VQ attention's `q`/`k`/`v`/`proj_out` 1x1 convolutions, `quantize.embedding`), which a converter then turns into
# ours; our checkpoints never hold those leaf names.

SIGLIP_PREFIX = "vision_model.vision_tower."
VQ_PREFIX = "gen_vision_model."
# Tensors of DeepSeek's checkpoints that Janus-Pro never uses: SigLIP's attention-pooling head (Janus takes every patch
# feature) and the VQ's training-time codebook usage counter.
UNUSED_KEYS = (r"^vision_model\.vision_tower\.attn_pool\.", r"^gen_vision_model\.quantize\.codebook_used$")


class _MatchesNothing(WeightRenaming):
    """The reverse of a one-way transform: saving never renames a key back into DeepSeek's format."""

    __slots__ = ()

    def rename_source_key(self, source_key: str) -> tuple[str, str | None]:
        return source_key, None


class _OneWay:
    """Mixin: the transform applies when loading only (see the section comment above)."""

    __slots__ = ()

    def reverse_transform(self) -> WeightTransform:
        return _MatchesNothing(self._original_target_patterns[:1], self._original_source_patterns[:1])


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
        # Biases only get new names; the 1x1-conv weights keep DeepSeek's leaf for `_VQ_ATTENTION_CONVERTERS`.
        key = re.sub(r"\.(q|k|v)\.bias$", r".to_\1.bias", key)
        key = re.sub(r"\.proj_out\.bias$", r".to_out.0.bias", key)
    return key


def _rename_siglip_key(name: str) -> str:
    """DeepSeek's timm SigLIP key (without `vision_model.vision_tower.`) -> `SiglipVisionModel` key."""
    block = re.match(r"blocks\.(\d+)\.(.*)", name)
    if name == "pos_embed":
        return "embeddings.pos_embed"  # squeezed by a converter
    if name.startswith("patch_embed.proj."):
        return "embeddings.patch_embedding." + name.split(".")[-1]
    if name.startswith("norm."):
        return "post_layernorm." + name.split(".")[-1]
    if block:
        layer, rest = block.groups()
        if not rest.startswith("attn.qkv."):  # `attn.qkv` is split by a converter
            rest = rest.replace("attn.proj.", "self_attn.out_proj.")
            rest = rest.replace("norm1.", "layer_norm1.").replace("norm2.", "layer_norm2.")
        return f"encoder.layers.{layer}.{rest}"
    return name  # unknown: reported as unexpected by the load check


def rename_deepseek_key(key: str) -> str | None:
    """Our (headless) name of one of DeepSeek's keys, or None when `key` is not one of DeepSeek's own names."""
    if key.startswith(SIGLIP_PREFIX) and not re.match(UNUSED_KEYS[0], key):
        return "vision_model." + _rename_siglip_key(key[len(SIGLIP_PREFIX) :])
    if key.startswith(VQ_PREFIX) and key not in ("gen_vision_model.quantize.codebook_used", "gen_vision_model.quantize.embedding.weight"):
        return "vq_model." + _rename_vq_key(key[len(VQ_PREFIX) :])
    if key.startswith("language_model.model."):
        return "language_model." + key[len("language_model.model.") :]
    if key == "language_model.lm_head.weight":
        return "lm_head.weight"
    return None


class DeepSeekRenaming(_OneWay, WeightRenaming):
    """Renames DeepSeek's SigLIP, VQ-16 and language-model keys to ours (one-way; see the section comment)."""

    __slots__ = ()

    def __init__(self):
        super().__init__(source_patterns=r"^(vision_model\.vision_tower|gen_vision_model|language_model)\.", target_patterns=r"\1.")

    def rename_source_key(self, source_key: str) -> tuple[str, str | None]:
        renamed = rename_deepseek_key(source_key)
        if renamed is None:
            return source_key, None
        self._was_used = True
        return renamed, self.source_patterns[0]


class DeepSeekConverter(_OneWay, WeightConverter):
    """A `WeightConverter` for DeepSeek's tensors that need more than a new name (one-way)."""

    __slots__ = ()


class _SingleTensorOp(ConversionOps):
    """A one-to-one conversion: the loader's single tensor in, the same tensor changed under its final name out."""

    def convert(self, input_dict, source_patterns, target_patterns, full_layer_name=None, **kwargs):
        tensor = next(iter(input_dict.values()))
        tensor = tensor[0] if isinstance(tensor, list) else tensor
        return {full_layer_name: self.transform(tensor)}

    def transform(self, tensor: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SqueezeLeadingDim(_SingleTensorOp):
    """timm's `pos_embed` `[1, tokens, width]` -> SigLIP's position embedding table `[tokens, width]`."""

    def transform(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[0]


class ConvToLinear(_SingleTensorOp):
    """A 1x1 convolution `[out, in, 1, 1]` (DeepSeek's VQ attention) -> a linear weight `[out, in]` (diffusers')."""

    def transform(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, :, 0, 0] if tensor.ndim == 4 else tensor


class L2NormalizeCodebook(_SingleTensorOp):
    """
    DeepSeek's VQ normalises its codebook when it looks tokens up (`l2_norm`); diffusers' VQModel does not, so the
    stored codebook is normalised once, in float32, while loading. There is no inverse: the one-way transform above.
    """

    def transform(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(tensor.float(), p=2, dim=-1).to(tensor.dtype)


def deepseek_weight_conversions() -> list[WeightTransform]:
    """The transforms that read DeepSeek's weights into ours, in the order transformers' loader applies them."""
    vq_attention = [
        DeepSeekConverter(rf"attentions\.(\d+)\.{name}\.weight", rf"attentions.\1.{target}.weight", operations=[ConvToLinear()])
        for name, target in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0"))
    ]
    return [
        DeepSeekRenaming(),
        DeepSeekConverter(r"attn\.qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], operations=[Chunk(dim=0)]),
        DeepSeekConverter(r"embeddings\.pos_embed$", "embeddings.position_embedding.weight", operations=[SqueezeLeadingDim()]),
        DeepSeekConverter(
            r"^gen_vision_model\.quantize\.embedding\.weight$",
            "vq_model.quantize.embedding.weight",
            operations=[L2NormalizeCodebook()],
        ),
        *vq_attention,
    ]


_ACTIVE_LOADS = {"count": 0}
_ACTIVE_LOADS_LOCK = threading.Lock()


@contextmanager
def deepseek_weight_conversion(model_type: str = "janus_pro"):
    """
    Register the DeepSeek transforms for `model_type` with transformers' loader while DeepSeek checkpoints load (an
    empty mapping otherwise), so that a model built from a config has no conversion mapping at all: transformers
    treats a registered mapping as two-way (it would revert it on save), and ours only reads a foreign format.
    Reentrant and thread-safe (counted).
    """
    with _ACTIVE_LOADS_LOCK:
        if _ACTIVE_LOADS["count"] == 0:
            register_checkpoint_conversion_mapping(model_type, deepseek_weight_conversions(), overwrite=True)
        _ACTIVE_LOADS["count"] += 1
    try:
        yield
    finally:
        with _ACTIVE_LOADS_LOCK:
            _ACTIVE_LOADS["count"] -= 1
            if _ACTIVE_LOADS["count"] == 0:
                register_checkpoint_conversion_mapping(model_type, [], overwrite=True)


def _listing(names) -> str:
    names = sorted(names)
    return f"{names[:10]}{' ...' if len(names) > 10 else ''}"


def check_mismatched_weights(model, load_config, loading_info) -> None:
    """
    Refuse tensors whose shape differs from the model's, naming them (transformers raises a bare `RuntimeError`
    pointing at its report), unless `ignore_mismatched_sizes=True` was passed.
    """
    if load_config.ignore_mismatched_sizes or not loading_info.mismatched_keys:
        return
    mismatched = [
        f"{key}: checkpoint {tuple(checkpoint_shape)} vs model {tuple(model_shape)}"
        for key, checkpoint_shape, model_shape in sorted(loading_info.mismatched_keys)
    ]
    _raise_load_error(model, load_config, [f"shape mismatches {_listing(mismatched)}"])


def check_loaded_weights(model, source: str | os.PathLike, loading_info: dict, **hub_kwargs) -> None:
    """
    Refuse a load, in any format, that left model tensors missing (they would stay randomly initialised) or found
    tensors the model has no place for, naming them. A headless model loaded from a full checkpoint leaves the
    text head out, as transformers' base models do.
    """
    base_model = getattr(model, model.base_model_prefix, None)
    unexpected = set()
    for key in loading_info["unexpected_keys"]:
        if base_model is None and key.split(".")[0] == "lm_head":
            continue
        if base_model is not None and hasattr(base_model, key.split(".")[0]):
            key = f"{model.base_model_prefix}.{key}"  # named in the model's namespace, as the missing ones are
        unexpected.add(key)
    problems = []
    if loading_info["missing_keys"]:
        problems.append(f"missing tensors {_listing(loading_info['missing_keys'])}")
    if unexpected:
        problems.append(f"unexpected tensors {_listing(unexpected)}")
    if problems:
        error_class = DeepSeekCheckpointError if checkpoint_format(source, **hub_kwargs) == "deepseek" else CheckpointError
        raise error_class(_load_error_message(model, source, problems) + " (Pass `strict=False` to load it anyway.)")


def _load_error_message(model, source, problems: list[str]) -> str:
    return (
        f"The weights of {source} do not fit its config.json ({type(model).__name__}): " + "; ".join(problems)
        + ". The weight files and config.json come from different checkpoints, or a file is damaged: download the "
        "checkpoint again."
    )


def _raise_load_error(model, load_config, problems: list[str]):
    raise _error_class(load_config)(_load_error_message(model, load_config.pretrained_model_name_or_path, problems))


# ----------------------------------------------------------------------------------------------------------------
# Weight files, in every format: checked before transformers' loader reads them
# ----------------------------------------------------------------------------------------------------------------

def _error_class(load_config) -> type[CheckpointError]:
    source = load_config.pretrained_model_name_or_path
    if source is None:
        return CheckpointError
    download_kwargs = {key: value for key, value in dict(load_config.download_kwargs or {}).items() if value is not None}
    is_deepseek = checkpoint_format(source, **hub_kwargs_from(download_kwargs)) == "deepseek"
    return DeepSeekCheckpointError if is_deepseek else CheckpointError


def read_weight_file(path: str, error_class: type[CheckpointError] = CheckpointError) -> dict[str, torch.Tensor] | None:
    """
    Check one weight file before it is loaded, naming it when it cannot be read. A `.bin` is read here, with
    `weights_only=True` (a pickle holding code or other objects is refused, never run) and `mmap` only for the zip
    format (a legacy `torch.save` file of plain tensors reads too); a safetensors file only has its header checked
    (None is returned: transformers memory-maps it).
    """
    damaged = f"The weight file {path} cannot be read ({{error}}); it is probably truncated or corrupted: download it again."
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open  # noqa: I001

        try:
            with safe_open(path, framework="pt"):
                return None
        except (SafetensorError, OSError) as error:
            raise error_class(damaged.format(error=error)) from None
    import pickle
    import zipfile

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        if "weights only load failed" in str(error).lower():
            raise error_class(
                f"The weight file {path} holds code or objects that are not tensors, so it was not loaded (only plain "
                "tensors are read from pickle files). Get the checkpoint from a source you trust, preferably as "
                "safetensors."
            ) from None
        raise error_class(damaged.format(error=error)) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise error_class(damaged.format(error=error)) from None


SHARD_INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _check_shard_names(load_config, error_class: type[CheckpointError]) -> None:
    """Refuse a shard index that names files outside the checkpoint folder (`../x.bin`, absolute paths)."""
    weight_map = (load_config.sharded_metadata or {}).get("weight_map", {})
    _refuse_outside_shards(weight_map, load_config.pretrained_model_name_or_path, error_class)


def check_local_shard_index(folder, subfolder: str = "", error_class: type[CheckpointError] = CheckpointError) -> None:
    """
    The shard-name check of a local checkpoint folder, run before transformers resolves its shards: whichever
    transformers is installed (5.25 refuses such names itself with its own ValueError, 5.24 does not), the load fails
    with our `CheckpointError` naming the files and nothing outside the folder is opened.
    """
    if folder is None or not os.path.isdir(folder):
        return
    for index_name in SHARD_INDEX_NAMES:
        index_path = os.path.join(folder, subfolder or "", index_name)
        if not os.path.isfile(index_path):
            continue
        try:
            with open(index_path, encoding="utf-8") as file:
                weight_map = json.load(file).get("weight_map", {})
        except (OSError, ValueError, AttributeError):
            continue  # an unreadable index is transformers' to report, with its own message
        if isinstance(weight_map, dict):
            _refuse_outside_shards(weight_map, folder, error_class)


def _refuse_outside_shards(weight_map: dict, source, error_class: type[CheckpointError]) -> None:
    outside = sorted(
        {
            name
            for name in weight_map.values()
            if isinstance(name, str) and (os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == "..")
        }
    )
    if outside:
        raise error_class(
            f"The shard index of {source} names weight files outside the "
            f"checkpoint folder: {outside}. They were not read; a shard index may only name files inside its folder."
        )


def read_weight_files(checkpoint_files: list[str], load_config) -> dict[str, torch.Tensor] | None:
    """
    Check every weight file of a load (shard names, truncation, pickled code) and read the `.bin` ones; the merged
    state dict of the `.bin` files, or None when they are safetensors (left to transformers' memory-mapped reader).
    """
    try:
        _check_shard_names(load_config, CheckpointError)
        if not load_config.weights_only:  # the caller explicitly asked transformers to unpickle anything
            return None
        state_dict = {}
        for path in checkpoint_files:
            tensors = read_weight_file(path)
            if tensors is not None:
                state_dict.update(tensors)
    except CheckpointError as error:
        error_class = _error_class(load_config)
        if error_class is CheckpointError:
            raise
        raise error_class(str(error)) from None
    return state_dict or None


def use_mapped_generation_config(model) -> None:
    """
    A model loaded from DeepSeek's format without a `generation_config.json` gets its generation config from the
    mapped [`JanusProConfig`] (pad, BOS and EOS ids), not from DeepSeek's raw config.json, which has none of them.
    """
    from transformers import GenerationConfig

    from_deepseek = any(isinstance(t, DeepSeekRenaming) for t in getattr(model, "_weight_conversions", None) or ())
    if from_deepseek and model.can_generate() and getattr(model.generation_config, "_from_model_config", False):
        model.generation_config = GenerationConfig.from_model_config(model.config)
