"""
Checkpoint directories: read a Janus-Pro checkpoint in any of its three formats (DeepSeek's `multi_modality`, ours
`janus_pro`, transformers' built-in `janus`) and write it converted into another directory, model, generation config
and processor. [`convert_checkpoint`] detects the source's format and picks the conversion.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import JanusConfig, JanusForConditionalGeneration, JanusProcessor
from transformers.utils import logging

from ..configuration_janus_pro import JanusProConfig
from ..modeling_janus_pro import JanusProForConditionalGeneration
from ..processing_janus_pro import JanusProProcessor
from ..utils import SPECIAL_TOKENS, expected_shapes
from .checks import (
    check_checkpoint_tensors,
    check_destination,
    check_max_shard_size,
    check_processor_matches,
    dtype_kwargs,
    has_tokenizer,
    source_format,
)
from .models import janus_pro_to_janus, janus_to_janus_pro
from .processors import janus_pro_processor_to_janus, janus_processor_to_janus_pro


logger = logging.get_logger(__name__)

TARGET_FORMATS = ("ours", "janus")
# The converter of each source format, named in the error for a source it does not read.
CONVERTER_OF_FORMAT = {
    "deepseek": "convert_deepseek_to_janus_pro",
    "ours": "convert_janus_pro_to_janus",
    "janus": "convert_janus_to_janus_pro",
}


@contextmanager
def staged_directory(dst_dir: str | os.PathLike) -> Iterator[Path]:
    """
    A new folder beside `dst_dir` to write a checkpoint into; when the block completes, it takes `dst_dir`'s place
    (an earlier checkpoint there is replaced as a whole, so none of its weight files stays beside the new ones). When
    the block fails or is interrupted, the folder is removed and `dst_dir` is left as it was.
    """
    destination = Path(dst_dir).absolute()
    created = [parent for parent in reversed(destination.parents) if not parent.exists()]
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.converting-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        if destination.exists():
            replaced = destination.parent / f".{destination.name}.replaced-{uuid.uuid4().hex[:8]}"
            os.rename(destination, replaced)
            try:
                os.rename(staging, destination)
            except BaseException:
                os.rename(replaced, destination)
                raise
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.rename(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created):
            if parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
        raise


def _check_arguments(
    src_dir, dst_dir, dtype, max_shard_size, accepted_formats: tuple[str, ...], converter: str
) -> tuple[str, dict, str | int]:
    """
    Every argument of a directory conversion, checked before anything is loaded or written: the source's format
    (one `converter` reads), the dtype, the shard size and the destination. Returns the format, the `dtype` keyword of
    `from_pretrained` and the shard size.
    """
    found = source_format(src_dir)
    if found not in accepted_formats:
        raise ValueError(
            f"{str(src_dir)!r} is in the {found!r} format, which `{converter}` does not read; use "
            f"`{CONVERTER_OF_FORMAT[found]}` or `convert_checkpoint`, which picks the conversion from the format."
        )
    loading_kwargs = dtype_kwargs(dtype)
    max_shard_size = check_max_shard_size(max_shard_size)
    check_destination(src_dir, dst_dir)
    return found, loading_kwargs, max_shard_size


def _load_janus_pro_model(src_dir, found: str, loading_kwargs: dict) -> JanusProForConditionalGeneration:
    """
    Our model of a checkpoint in DeepSeek's format or ours. One of ours whose weight files lack a tensor (which
    `from_pretrained` would initialise at random) is refused by name before it is loaded; DeepSeek's format is
    checked tensor by tensor when it is read.
    """
    if found == "ours":
        config = JanusProConfig.from_pretrained(src_dir)
        check_checkpoint_tensors(src_dir, expected_shapes(JanusProForConditionalGeneration, config))
    return JanusProForConditionalGeneration.from_pretrained(src_dir, **loading_kwargs)



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
        dst_dir: Output directory. The checkpoint is written beside it and takes its place only once complete (an
            earlier checkpoint there is replaced as a whole); a conversion that fails leaves it as it was.
        dtype: `"float32"`, `"bfloat16"`, `"float16"` or a `torch.dtype`; by default the checkpoint's own.
        max_shard_size: Largest weight file, as `save_pretrained` takes it.

    Every argument is checked before anything is loaded or written, and a checkpoint of ours whose weight files
    lack a tensor (or hold an unexpected one) is refused, naming it.

    Returns the converted model.
    """
    found, loading_kwargs, max_shard_size = _check_arguments(
        src_dir, dst_dir, dtype, max_shard_size, ("deepseek", "ours"), "convert_deepseek_to_janus_pro"
    )
    model = _load_janus_pro_model(src_dir, found, loading_kwargs)
    processor = JanusProProcessor.from_pretrained(src_dir)
    check_processor_matches(processor.tokenizer, processor.num_image_tokens, model.config, str(src_dir))
    with staged_directory(dst_dir) as staging:
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        processor.save_pretrained(staging)
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
        dst_dir: Output directory. The checkpoint is written beside it and takes its place only once complete (an
            earlier checkpoint there is replaced as a whole); a conversion that fails leaves it as it was.
        dtype: `"float32"`, `"bfloat16"`, `"float16"` or a `torch.dtype`; by default the checkpoint's own.
        max_shard_size: Largest weight file, as `save_pretrained` takes it.

    Every argument is checked before anything is loaded or written, and a checkpoint of ours whose weight files
    lack a tensor (or hold an unexpected one) is refused, naming it.

    Returns the converted model.
    """
    found, loading_kwargs, max_shard_size = _check_arguments(
        src_dir, dst_dir, dtype, max_shard_size, ("deepseek", "ours"), "convert_janus_pro_to_janus"
    )
    model = _load_janus_pro_model(src_dir, found, loading_kwargs)
    converted = janus_pro_to_janus(model)
    converted_processor = None
    if has_tokenizer(src_dir):
        processor = JanusProProcessor.from_pretrained(src_dir)
        check_processor_matches(processor.tokenizer, processor.num_image_tokens, model.config, str(src_dir))
        converted_processor = janus_pro_processor_to_janus(processor)
    else:
        logger.warning(f"{src_dir} has no tokenizer: only the model is converted.")
    with staged_directory(dst_dir) as staging:
        if converted_processor is not None:
            converted_processor.save_pretrained(staging)
        converted.save_pretrained(staging, max_shard_size=max_shard_size)
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
        dst_dir: Output directory. The checkpoint is written beside it and takes its place only once complete (an
            earlier checkpoint there is replaced as a whole); a conversion that fails leaves it as it was.
        dtype: `"float32"`, `"bfloat16"`, `"float16"` or a `torch.dtype`; by default the checkpoint's own.
        max_shard_size: Largest weight file, as `save_pretrained` takes it.
        chat_template: Replaces the processor's chat template (needed for `use_default_system_prompt=True`, see
            [`janus_processor_to_janus_pro`]).

    Every argument is checked before anything is loaded or written, and a checkpoint of ours whose weight files
    lack a tensor (or hold an unexpected one) is refused, naming it.

    Returns the converted model.
    """
    _, loading_kwargs, max_shard_size = _check_arguments(
        src_dir, dst_dir, dtype, max_shard_size, ("janus",), "convert_janus_to_janus_pro"
    )
    config = JanusConfig.from_pretrained(src_dir)
    tied = ("lm_head.weight",) if config.tie_word_embeddings else ()  # not stored when tied
    check_checkpoint_tensors(src_dir, expected_shapes(JanusForConditionalGeneration, config), ignore=tied)
    model = JanusForConditionalGeneration.from_pretrained(src_dir, **loading_kwargs)
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
    converted_processor = None
    if processor is not None:
        check_processor_matches(processor.tokenizer, processor.num_image_tokens, converted.config, str(src_dir))
        converted_processor = janus_processor_to_janus_pro(processor, chat_template=chat_template)
    else:
        logger.warning(f"{src_dir} has no tokenizer: only the model is converted.")
    with staged_directory(dst_dir) as staging:
        if converted_processor is not None:
            converted_processor.save_pretrained(staging)
        converted.save_pretrained(staging, max_shard_size=max_shard_size)
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
        dst_dir: Output directory. The checkpoint is written beside it and takes its place only once complete (an
            earlier checkpoint there is replaced as a whole); a conversion that fails leaves it as it was.
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
    "staged_directory",
]
