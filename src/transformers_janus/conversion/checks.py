"""
Checks every conversion shares: conversion arguments (dtype, shard size), whether a checkpoint's processor and model
belong together, and whether a checkpoint's weight files hold exactly the tensors its config asks for.
"""

import os
from pathlib import Path

import torch
from transformers.utils import cached_file

from ..configuration_janus_pro import JanusProConfig
from ..utils import SPECIAL_TOKENS, CheckpointError, checkpoint_format, read_config_dict


CHECKPOINT_DTYPES = ("float32", "bfloat16", "float16")


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


__all__ = [
    "CHECKPOINT_DTYPES",
    "JanusConversionError",
    "raise_if_problems",
    "dtype_kwargs",
    "source_format",
    "has_tokenizer",
    "check_processor_matches",
]
