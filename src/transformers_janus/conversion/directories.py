"""
Checkpoint directories: read a Janus-Pro checkpoint in any of its three formats (DeepSeek's `multi_modality`, ours
`janus_pro`, transformers' built-in `janus`) and write it converted into another directory, model, generation config
and processor. [`convert_checkpoint`] detects the source's format and picks the conversion.
"""

import os
from dataclasses import dataclass

import torch
from transformers import JanusForConditionalGeneration, JanusProcessor
from transformers.utils import logging

from ..modeling_janus_pro import JanusProForConditionalGeneration
from ..processing_janus_pro import JanusProProcessor
from ..utils import SPECIAL_TOKENS
from .checks import check_processor_matches, dtype_kwargs, has_tokenizer, source_format
from .models import janus_pro_to_janus, janus_to_janus_pro
from .processors import janus_pro_processor_to_janus, janus_processor_to_janus_pro


logger = logging.get_logger(__name__)

TARGET_FORMATS = ("ours", "janus")


def convert_deepseek_to_janus_pro(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    dtype: str | torch.dtype | None = None,
    max_shard_size: str | int = "5GB",
) -> JanusProForConditionalGeneration:
    """
    Convert a DeepSeek-format checkpoint (or re-save one of ours in another dtype or shard size) to `dst_dir`:
    safetensors weights under our keys, our config, and the processor. Loading DeepSeek's format directly works
    too; converting once saves the key mapping at every load and gives a directory that also loads without this
    package (`trust_remote_code=True`).

    Args:
        src_dir: DeepSeek's checkpoint directory or Hub id (e.g. `deepseek-ai/Janus-Pro-1B`).
        dst_dir: Output directory.
        dtype: `"float32"`, `"bfloat16"`, `"float16"` or a `torch.dtype`; by default the checkpoint's own.
        max_shard_size: Largest weight file, as `save_pretrained` takes it.

    Returns the converted model.
    """
    model = JanusProForConditionalGeneration.from_pretrained(src_dir, **dtype_kwargs(dtype))
    processor = JanusProProcessor.from_pretrained(src_dir)
    check_processor_matches(processor.tokenizer, processor.num_image_tokens, model.config, str(src_dir))
    model.save_pretrained(dst_dir, max_shard_size=max_shard_size)
    processor.save_pretrained(dst_dir)
    return model


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
    model = JanusProForConditionalGeneration.from_pretrained(src_dir, **dtype_kwargs(dtype))
    converted = janus_pro_to_janus(model)
    if has_tokenizer(src_dir):
        processor = JanusProProcessor.from_pretrained(src_dir)
        check_processor_matches(processor.tokenizer, processor.num_image_tokens, model.config, str(src_dir))
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
    model = JanusForConditionalGeneration.from_pretrained(src_dir, **dtype_kwargs(dtype))
    processor = JanusProcessor.from_pretrained(src_dir) if has_tokenizer(src_dir) else None
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
        check_processor_matches(processor.tokenizer, processor.num_image_tokens, converted.config, str(src_dir))
        janus_processor_to_janus_pro(processor, chat_template=chat_template).save_pretrained(dst_dir)
    else:
        logger.warning(f"{src_dir} has no tokenizer: only the model is converted.")
    converted.save_pretrained(dst_dir, max_shard_size=max_shard_size)
    return converted


@dataclass
class ConvertedCheckpoint:
    """What [`convert_checkpoint`] did: the converted model and the source's and the destination's formats."""

    model: JanusProForConditionalGeneration | JanusForConditionalGeneration
    source_format: str
    target_format: str


def convert_checkpoint(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    to: str | None = None,
    dtype: str | torch.dtype | None = None,
    max_shard_size: str | int = "5GB",
    chat_template: str | None = None,
) -> ConvertedCheckpoint:
    """
    Convert the checkpoint in `src_dir`, whatever its format, to the format `to` in `dst_dir`: the one function the
    `janus-pro convert` command and the `conversion/` scripts call.

    Args:
        src_dir: Checkpoint directory or Hub id, in DeepSeek's format, ours or the built-in `janus` one (read from
            its config.json).
        dst_dir: Output directory.
        to: `"ours"` or `"janus"`; by default ours, or janus when the source is already ours.
        dtype: `"float32"`, `"bfloat16"`, `"float16"` or a `torch.dtype`; by default the checkpoint's own.
        max_shard_size: Largest weight file, as `save_pretrained` takes it.
        chat_template: For a built-in source only: replaces its processor's chat template (see
            [`janus_processor_to_janus_pro`]).
    """
    if to is not None and to not in TARGET_FORMATS:
        raise ValueError(f"`to` must be one of {list(TARGET_FORMATS)} or None, got {to!r}.")
    found = source_format(src_dir)
    target = to or ("janus" if found == "ours" else "ours")
    if found == target == "janus":
        raise ValueError(f"{str(src_dir)!r} is already in transformers' built-in janus format.")
    if chat_template is not None and found != "janus":
        raise ValueError(
            "`chat_template` replaces the chat template of a built-in `janus` processor; "
            f"{str(src_dir)!r} is in the {found!r} format, whose processor keeps its own template."
        )
    kwargs = {"dtype": dtype, "max_shard_size": max_shard_size}
    if target == "janus":
        model = convert_janus_pro_to_janus(src_dir, dst_dir, **kwargs)
    elif found == "janus":
        model = convert_janus_to_janus_pro(src_dir, dst_dir, chat_template=chat_template, **kwargs)
    else:  # DeepSeek's format, or ours re-saved in another dtype or sharding
        model = convert_deepseek_to_janus_pro(src_dir, dst_dir, **kwargs)
    return ConvertedCheckpoint(model=model, source_format=found, target_format=target)


__all__ = [
    "convert_deepseek_to_janus_pro",
    "convert_janus_pro_to_janus",
    "convert_janus_to_janus_pro",
    "ConvertedCheckpoint",
    "convert_checkpoint",
]
