"""
Processors between this package's [`JanusProProcessor`] and transformers' built-in `JanusProcessor`, both ways:
same tokenizer, image settings, `num_image_tokens` and chat template.
"""

import tempfile

from transformers import AutoTokenizer, JanusProcessor
from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

from ..image_processing_janus_pro import JanusProImageProcessor
from ..processing_janus_pro import JanusProProcessor
from .checks import JanusConversionError


# The built-in `JanusProcessor` reads these named tokens from its tokenizer (`tokenizer.image_token`, ...).
JANUS_TOKENIZER_TOKENS = {
    "image_token": "<image_placeholder>",
    "boi_token": "<begin_of_image>",
    "eoi_token": "<end_of_image>",
}


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


__all__ = ["janus_pro_processor_to_janus", "janus_processor_to_janus_pro"]
