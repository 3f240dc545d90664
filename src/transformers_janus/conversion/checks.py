"""
Checks every conversion shares: conversion arguments (dtype, shard size), whether a checkpoint's processor and model
belong together, and whether a checkpoint's weight files hold exactly the tensors its config asks for.
"""

import fnmatch
import os
import re
from pathlib import Path

import torch
from transformers.utils import cached_file

from ..configuration_janus_pro import JanusProConfig
from ..deepseek_format import read_weight_file
from ..utils import (
    SPECIAL_TOKENS,
    CheckpointError,
    check_state_dict_matches,
    checkpoint_format,
    read_config_dict,
    resolve_weight_files,
)


CHECKPOINT_DTYPES = ("float32", "bfloat16", "float16")
# Sizes `save_pretrained` (huggingface_hub's shard splitter) reads in a string, e.g. "5GB", "500MB", "1.5GB".
SHARD_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(TB|GB|MB|KB)\s*$", re.IGNORECASE)
# What a checkpoint directory written by `save_pretrained` (model, processor, remote code, model card) holds: a
# destination holding only such files may be replaced by a new conversion; anything else stops it.
CHECKPOINT_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.bin",
    "*.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "processor_config.json",
    "preprocessor_config.json",
    "chat_template.*",
    "README.md",
    "*.py",
    ".gitattributes",
)


class JanusConversionError(ValueError):
    """A model, config or processor that the target format cannot hold: the message names the field and the fix."""


def raise_if_problems(problems: list[str], source: str, target: str):
    """Refuse a conversion with every problem found at once, so that one run tells the user all there is to fix."""
    if problems:
        raise JanusConversionError(
            f"Cannot convert this {source} to {target} without changing the model: "
            + "; ".join(problems)
            + ". Nothing was converted."
        )


def dtype_kwargs(dtype: str | torch.dtype | None) -> dict:
    """
    The `dtype` keyword of `from_pretrained` for a conversion's `dtype` argument (`"float32"`, `"bfloat16"`,
    `"float16"` or a `torch.dtype`); empty for None, so that `from_pretrained` keeps the checkpoint's own dtype.
    """
    if dtype is None:
        return {}
    if isinstance(dtype, str):
        if dtype not in CHECKPOINT_DTYPES:
            raise ValueError(f"`dtype` must be one of {list(CHECKPOINT_DTYPES)} or a torch.dtype, got {dtype!r}.")
        dtype = getattr(torch, dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"`dtype` must be one of {list(CHECKPOINT_DTYPES)} or a floating torch.dtype, got {dtype!r}.")
    return {"dtype": dtype}


def check_max_shard_size(max_shard_size: str | int) -> str | int:
    """
    `max_shard_size` as `save_pretrained` takes it (a positive number of bytes, or a size such as `"5GB"`), checked
    before anything is loaded or written; a string of digits becomes that number of bytes.
    """
    if isinstance(max_shard_size, str) and max_shard_size.strip().isdigit():
        max_shard_size = int(max_shard_size)
    if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, (int, str)):
        raise ValueError(f"`max_shard_size` must be a size such as '5GB' or a number of bytes, got {max_shard_size!r}.")
    if isinstance(max_shard_size, int):
        if max_shard_size <= 0:
            raise ValueError(f"`max_shard_size` must be a positive number of bytes, got {max_shard_size}.")
        return max_shard_size
    match = SHARD_SIZE.match(max_shard_size)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"`max_shard_size` must be a size such as '5GB', '500MB' or '300KB' (units TB, GB, MB, KB) or a number of "
            f"bytes, got {max_shard_size!r}."
        )
    return max_shard_size


def check_destination(src_dir: str | os.PathLike, dst_dir: str | os.PathLike):
    """
    Refuse, before anything is loaded or written, a destination that a conversion must not replace: the source
    itself, a folder that holds the source, a file, or a folder holding anything else than a checkpoint's files (the
    converted checkpoint replaces the destination as a whole, so that no stale weight file of an earlier checkpoint
    stays beside the new ones).
    """
    destination = Path(dst_dir).resolve()
    source = Path(src_dir).resolve() if Path(src_dir).exists() else None
    if source is not None and source == destination:
        raise ValueError(
            f"The source and the destination are the same directory ({str(dst_dir)!r}); write the converted "
            "checkpoint elsewhere (converting in place would overwrite the source)."
        )
    if source is not None and destination in source.parents:
        raise ValueError(
            f"The destination {str(dst_dir)!r} holds the source {str(src_dir)!r}; the converted checkpoint replaces "
            "its destination as a whole, so write it elsewhere."
        )
    for ancestor in [destination, *destination.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"The destination {str(dst_dir)!r} is (or lies under) a file: {str(ancestor)!r}.")
            break
    if destination.is_dir():
        foreign = sorted(
            entry.name + ("/" if entry.is_dir() else "")
            for entry in destination.iterdir()
            if entry.is_dir() or not any(fnmatch.fnmatch(entry.name, pattern) for pattern in CHECKPOINT_FILE_PATTERNS)
        )
        if foreign:
            raise ValueError(
                f"The destination {str(dst_dir)!r} holds files that are not part of a checkpoint ({foreign[:10]}); "
                "a conversion replaces its destination folder as a whole. Pick a new or empty folder, or move them."
            )


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if os.path.isabs(name) or name.startswith((".", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def source_format(src_dir: str | os.PathLike) -> str:
    """
    The format of a conversion's source (`"deepseek"`, `"ours"` or `"janus"`, see
    [`~transformers_janus.utils.checkpoint_format`]), with an error that says what is wrong when it is no Janus-Pro
    checkpoint: a path that does not exist, a file, a directory without `config.json`, another model.
    """
    name = str(src_dir)
    if not Path(name).exists():
        if not _is_hub_id(name):
            raise CheckpointError(f"The source {name!r} does not exist; pass a checkpoint directory or a Hub id.")
        try:
            config_dict = read_config_dict(name)
        except OSError as error:
            raise CheckpointError(
                f"The source {name!r} does not exist locally and cannot be fetched from the Hub ({error})."
            ) from error
        if config_dict is None:
            raise CheckpointError(
                f"The source {name!r} does not exist locally, and no Hub repository of that name with a config.json "
                "is reachable (with HF_HUB_OFFLINE=1 only the local cache is looked at); pass a checkpoint directory."
            )
    elif not Path(name).is_dir():
        raise CheckpointError(f"The source {name!r} is a file, not a checkpoint directory.")
    found = checkpoint_format(name)
    if found is None:
        config_dict = read_config_dict(name)
        if config_dict is None:
            raise CheckpointError(f"{name!r} has no config.json: it is not a checkpoint directory (or Hub id).")
        raise CheckpointError(
            f"{name!r} holds a {config_dict.get('model_type')!r} model, not Janus-Pro; conversion reads Janus-Pro "
            "checkpoints in DeepSeek's format (multi_modality), ours (janus_pro) or transformers' built-in one (janus)."
        )
    return found


def has_tokenizer(name_or_path: str | os.PathLike) -> bool:
    """Whether a checkpoint directory or Hub repository holds a tokenizer (the processor is converted only then)."""
    return any(
        cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False) is not None
        for filename in ("tokenizer.json", "tokenizer_config.json")
    )


def check_processor_matches(tokenizer, num_image_tokens: int, config: JanusProConfig, source: str):
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


def check_checkpoint_tensors(name_or_path: str | os.PathLike, expected: dict[str, torch.Size], ignore: tuple = ()):
    """
    Refuse a checkpoint whose weight files lack a tensor its config asks for, hold one it does not, or hold one of
    another shape, naming them: `from_pretrained` would initialise a missing tensor at random (with a warning only)
    and the conversion would write those random numbers. Only the files' headers are read for safetensors.
    """
    shapes = {}
    for path in resolve_weight_files(name_or_path):
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                for key in handle.keys():
                    shapes[key] = handle.get_slice(key).get_shape()
        else:
            shapes.update({key: tensor.shape for key, tensor in read_weight_file(path).items()})
    found = {key: torch.empty(shape, device="meta") for key, shape in shapes.items() if key not in ignore}
    check_state_dict_matches(
        found, {key: shape for key, shape in expected.items() if key not in ignore}, str(name_or_path), JanusConversionError
    )


__all__ = [
    "CHECKPOINT_DTYPES",
    "JanusConversionError",
    "raise_if_problems",
    "dtype_kwargs",
    "check_max_shard_size",
    "check_destination",
    "source_format",
    "has_tokenizer",
    "check_processor_matches",
    "check_checkpoint_tensors",
]
