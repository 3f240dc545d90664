"""
Models between this package's [`JanusProForConditionalGeneration`] and transformers' built-in
`JanusForConditionalGeneration`, in memory: the converted model shares the input model's weight storage.
"""

import copy

import torch
from transformers import JanusForConditionalGeneration
from transformers.utils import logging

from ..modeling_janus_pro import JanusProForConditionalGeneration
from ..utils import expected_shapes
from .config import janus_config_to_janus_pro, janus_pro_config_to_janus, janus_special_token_ids
from .weights import convert_janus_pro_state_dict_to_janus, convert_janus_state_dict_to_janus_pro


logger = logging.get_logger(__name__)

# SPEC §4: DeepSeek's classifier-free guidance weight, the built-in image generation's default too.
DEFAULT_GUIDANCE_SCALE = 5


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def janus_pro_to_janus(model: JanusProForConditionalGeneration) -> JanusForConditionalGeneration:
    """
    The built-in `transformers.JanusForConditionalGeneration` holding exactly our model's weights, in its dtype.
    The weights share storage with `model` (no copy, so large checkpoints convert without twice the memory).

    The generation config gets what the built-in `generate(generation_mode="image")` needs:
    `generation_kwargs={"boi_token_id": ...}`, the pad id and `guidance_scale=5`.
    """
    if not isinstance(model, JanusProForConditionalGeneration):
        raise TypeError(f"Expected a JanusProForConditionalGeneration, got {type(model).__name__}.")
    config = janus_pro_config_to_janus(model.config)
    expected = expected_shapes(JanusForConditionalGeneration, config)
    state_dict = convert_janus_pro_state_dict_to_janus(model.state_dict(), expected)
    converted = JanusForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=state_dict, dtype=_model_dtype(model)
    )
    generation_config = copy.deepcopy(model.generation_config)
    generation_config.bos_token_id = model.config.text_config.bos_token_id
    generation_config.pad_token_id = model.config.pad_token_id
    generation_config.generation_kwargs = {
        **(getattr(generation_config, "generation_kwargs", None) or {}),
        "boi_token_id": model.config.boi_token_id,
    }
    if generation_config.guidance_scale is None:
        generation_config.guidance_scale = DEFAULT_GUIDANCE_SCALE
    # A generation config marked as derived from the model config loses its extra fields (`generation_kwargs`) on load.
    generation_config._from_model_config = False
    converted.generation_config = generation_config
    return converted.train(model.training)


def janus_to_janus_pro(
    model: JanusForConditionalGeneration, special_token_ids: dict[str, int] | None = None
) -> JanusProForConditionalGeneration:
    """
    Our [`JanusProForConditionalGeneration`] holding exactly the built-in model's weights, in its dtype (sharing
    their storage), except that an un-normalised VQ codebook is stored L2-normalised (what the built-in VQ decodes).

    The built-in config does not record the ids of `<begin_of_image>`, `<end_of_image>` and the pad token; they come
    from `special_token_ids` (keys `boi_token_id`, `eoi_token_id`, `pad_token_id`), else from what our conversion
    stored in its config, else from its generation config. A built-in model with tied word embeddings (the built-in
    default) converts to an untied one whose `lm_head` holds the same numbers.
    """
    if not isinstance(model, JanusForConditionalGeneration):
        raise TypeError(f"Expected a transformers JanusForConditionalGeneration, got {type(model).__name__}.")
    token_ids = janus_special_token_ids(model.config, model.generation_config, special_token_ids)
    config = janus_config_to_janus_pro(model.config, token_ids)
    if model.config.tie_word_embeddings:
        logger.warning(
            "The built-in Janus model ties `lm_head` to the input embeddings; Janus-Pro keeps `lm_head` as its own "
            "tensor, so the converted model gets a copy of the same numbers (they diverge if you train)."
        )
    expected = expected_shapes(JanusProForConditionalGeneration, config)
    state_dict = dict(model.state_dict())
    lm_head = model.lm_head.weight.detach()
    if lm_head.data_ptr() == model.get_input_embeddings().weight.data_ptr():
        lm_head = lm_head.clone()  # two tensors of ours must not share storage (saving would refuse)
    state_dict["lm_head.weight"] = lm_head
    state_dict = convert_janus_state_dict_to_janus_pro(state_dict, expected)
    converted = JanusProForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=state_dict, dtype=_model_dtype(model)
    )
    generation_config = copy.deepcopy(model.generation_config)
    generation_kwargs = dict(getattr(generation_config, "generation_kwargs", None) or {})
    generation_kwargs.pop("boi_token_id", None)
    if generation_kwargs:
        generation_config.generation_kwargs = generation_kwargs
    elif hasattr(generation_config, "generation_kwargs"):
        del generation_config.generation_kwargs
    if generation_config.guidance_scale not in (None, DEFAULT_GUIDANCE_SCALE):
        logger.warning(
            f"The built-in generation config's `guidance_scale` ({generation_config.guidance_scale}) is not kept: "
            "Janus-Pro's `generate_images` takes it as an argument (default 5)."
        )
    # Janus-Pro's text `generate` must not run transformers' classifier-free guidance on answers.
    generation_config.guidance_scale = None
    if getattr(generation_config, "boi_token_id", None) is not None:
        del generation_config.boi_token_id
    generation_config.pad_token_id = config.pad_token_id
    converted.generation_config = generation_config
    return converted.train(model.training)


__all__ = ["janus_pro_to_janus", "janus_to_janus_pro"]
