"""
Leaf helpers every module of the package may import (it imports nothing of ours): Janus-Pro's special tokens, the
download arguments of `from_pretrained`, state-dict checks, the classifier-free-guidance rows of a prompt, and
whether this CPU has bfloat16 matrix kernels.
"""

import json
import os

import torch
from transformers.utils import cached_file, logging


logger = logging.get_logger(__name__)

# Special tokens, looked up by text: their ids differ between published checkpoints (pad 100002 vs 100015).
SPECIAL_TOKENS = {
    "image_token_id": "<image_placeholder>",
    "boi_token_id": "<begin_of_image>",
    "eoi_token_id": "<end_of_image>",
    "pad_token_id": "<｜▁pad▁｜>",
}

# `model_type` of each checkpoint format a Janus-Pro model comes in -> the name this package gives the format.
CHECKPOINT_FORMATS = {"janus_pro": "ours", "multi_modality": "deepseek", "janus": "janus"}

# Where a checkpoint's weights are, in the order transformers looks: safetensors first, single file or sharded.
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")

HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as it is: the message names the file, field or tensor, and the fix."""


def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN has bfloat16 matrix kernels on this CPU (AMX or AVX-512 BF16): where bfloat16 products run
    fast, rather than emulated."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def hub_kwargs_from(kwargs: dict) -> dict:
    """The download arguments among `from_pretrained` keyword arguments."""
    return {key: kwargs[key] for key in HUB_KWARGS if kwargs.get(key) is not None}


def read_config_dict(name_or_path: str | os.PathLike, **hub_kwargs) -> dict | None:
    """A checkpoint's `config.json` as a dict (None when it has none), with an error naming the file when unreadable."""
    config_file = cached_file(name_or_path, "config.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if config_file is None:
        return None
    try:
        with open(config_file, encoding="utf-8") as handle:
            config_dict = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_file} is not valid JSON ({error}); restore or download the checkpoint again.")
    if not isinstance(config_dict, dict):
        raise CheckpointError(
            f"{config_file} holds a JSON {type(config_dict).__name__}, not an object of config fields; restore or "
            "download the checkpoint again."
        )
    return config_dict


def checkpoint_format(name_or_path: str | os.PathLike, **hub_kwargs) -> str | None:
    """
    Which format a checkpoint is in, from its config.json's `model_type`: `"ours"` (`janus_pro`), `"deepseek"`
    (DeepSeek's published `multi_modality`) or `"janus"` (transformers' built-in); None for anything else.
    """
    config_dict = read_config_dict(name_or_path, **hub_kwargs)
    return CHECKPOINT_FORMATS.get(config_dict.get("model_type")) if config_dict is not None else None


def resolve_weight_files(name_or_path: str | os.PathLike, **hub_kwargs) -> list[str]:
    """
    The weight files of a checkpoint (safetensors preferred, single or sharded with an index), refusing shard names
    that leave the checkpoint folder.
    """
    for filename in WEIGHT_FILES:
        resolved = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        if resolved is None:
            continue
        if not filename.endswith(".index.json"):
            return [resolved]
        with open(resolved, encoding="utf-8") as handle:
            weight_map = json.load(handle).get("weight_map", {})
        shards = sorted(set(weight_map.values()))
        outside = [shard for shard in shards if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/")]
        if outside:
            raise CheckpointError(
                f"The shard index {resolved} names files outside the checkpoint folder: {outside}; it was not read."
            )
        return [cached_file(name_or_path, shard, **hub_kwargs) for shard in shards]
    raise CheckpointError(f"No weights found in {name_or_path}: expected one of {list(WEIGHT_FILES)}.")


def read_special_token_ids(name_or_path: str | os.PathLike, **hub_kwargs) -> dict[str, int]:
    """Ids of Janus's special tokens, read from the checkpoint's `tokenizer.json` by their text."""
    tokenizer_file = cached_file(
        name_or_path, "tokenizer.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if tokenizer_file is None:
        return {}
    with open(tokenizer_file, encoding="utf-8") as handle:
        tokenizer = json.load(handle)
    vocab = {token["content"]: token["id"] for token in tokenizer.get("added_tokens", [])}
    vocab.update(tokenizer.get("model", {}).get("vocab", {}) or {})
    found = {name: vocab[text] for name, text in SPECIAL_TOKENS.items() if text in vocab}
    missing = sorted(set(SPECIAL_TOKENS) - set(found))
    if missing:
        logger.warning(f"tokenizer.json of {name_or_path} lacks {[SPECIAL_TOKENS[m] for m in missing]}; using defaults.")
    return found


def expected_shapes(model_class, config) -> dict[str, torch.Size]:
    """The state-dict shapes `model_class(config)` has, found on the meta device (no memory for weights)."""
    with torch.device("meta"):
        return {key: tensor.shape for key, tensor in model_class(config).state_dict().items()}


def state_dict_mismatches(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> list[str]:
    """Missing, unexpected and mis-shaped tensors, each named (at most 10 of a kind), as phrases for an error."""

    def listing(names: list[str]) -> str:
        return f"{names[:10]}{' ...' if len(names) > 10 else ''}"

    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key])}"
        for key in sorted(set(state_dict) & set(expected))
        if tuple(state_dict[key].shape) != tuple(expected[key])
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {listing(mismatched)}")
    return problems


def check_state_dict_matches(
    state_dict: dict[str, torch.Tensor],
    expected: dict[str, torch.Size],
    source: str,
    error_class: type[Exception] = CheckpointError,
):
    """Refuse missing, unexpected or mis-shaped tensors, naming them (a silent partial load is never wanted)."""
    problems = state_dict_mismatches(state_dict, expected)
    if problems:
        raise error_class(
            f"The weights of {source} do not fit its config.json: " + "; ".join(problems) + ". The weight files "
            "and config.json come from different checkpoints, or a file is damaged: download the checkpoint again."
        )


def unconditional_input_ids(
    input_ids: torch.LongTensor,
    attention_mask: torch.LongTensor,
    pad_token_id: int,
    keep_token_ids: tuple[int, ...] = (),
) -> torch.LongTensor:
    """
    DeepSeek's unconditional rows: every real token but the first (BOS) and the last (`<begin_of_image>`) becomes
    the pad token. Works on left-padded batches (the first *real* token is kept). Tokens in `keep_token_ids` (the
    image span, when the unconditional branch should see the input image) are kept too.
    """
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    first_real = (attention_mask == 0).sum(-1, keepdim=True)
    keep = (positions == first_real) | (positions == input_ids.shape[1] - 1) | (attention_mask == 0)
    for token_id in keep_token_ids:
        keep |= input_ids == token_id
    return torch.where(keep, input_ids, torch.full_like(input_ids, pad_token_id))


def separate_shared_storage(model) -> list[str]:
    """
    Give every parameter and buffer of `model` a storage of its own, exactly its size; returns the names that had
    none. transformers' loader splits DeepSeek's fused SigLIP `qkv` tensor into q/k/v views of one storage; a plain
    `safetensors` save (e.g. `Accelerator.save_state`) would then keep one of them and drop the others, and refuse to
    load the one kept, since it covers only a third of its storage.
    """
    tensors = [*model.named_parameters(), *model.named_buffers()]
    users = {}
    for _, tensor in tensors:
        users[tensor.untyped_storage().data_ptr()] = users.get(tensor.untyped_storage().data_ptr(), 0) + 1
    separated = []
    for name, tensor in tensors:
        storage = tensor.untyped_storage()
        if users[storage.data_ptr()] > 1 or storage.nbytes() != tensor.numel() * tensor.element_size():
            tensor.data = tensor.data.clone()
            separated.append(name)
    return separated


def sha256_file(path) -> str:
    """The SHA-256 of a file's bytes, as hex: checkpoint manifests, VQ-code cache keys, shipped-weights records."""
    import hashlib

    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()

