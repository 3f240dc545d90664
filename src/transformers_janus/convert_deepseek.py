"""Rewrite a checkpoint as DeepSeek published it (`multi_modality`) in this package's format (`janus_pro`)."""

import os

import torch

from .convert_janus import _check_processor_matches, _dtype_kwargs
from .modeling_janus_pro import JanusProForConditionalGeneration
from .processing_janus_pro import JanusProProcessor


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
    model = JanusProForConditionalGeneration.from_pretrained(src_dir, **_dtype_kwargs(dtype))
    processor = JanusProProcessor.from_pretrained(src_dir)
    _check_processor_matches(processor.tokenizer, processor.num_image_tokens, model.config, str(src_dir))
    model.save_pretrained(dst_dir, max_shard_size=max_shard_size)
    processor.save_pretrained(dst_dir)
    return model
