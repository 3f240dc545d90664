"""Importing the package registers every class with the Auto API, for `janus_pro` and DeepSeek's `multi_modality`."""

from transformers import TokenizersBackend
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, MODEL_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

from transformers_janus import JanusProConfig, JanusProForConditionalGeneration, JanusProImageProcessor, JanusProProcessor
from transformers_janus.deepseek_format import DeepSeekJanusConfig


def test_model_types_are_registered():
    assert CONFIG_MAPPING["janus_pro"] is JanusProConfig
    assert CONFIG_MAPPING["multi_modality"] is DeepSeekJanusConfig
    # transformers' own `janus` stays its own.
    assert CONFIG_MAPPING["janus"].__module__.startswith("transformers.")


def test_auto_classes_map_to_our_classes():
    assert MODEL_MAPPING[JanusProConfig] is JanusProForConditionalGeneration
    assert MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[JanusProConfig] is JanusProForConditionalGeneration
    assert PROCESSOR_MAPPING[JanusProConfig] is JanusProProcessor
    assert issubclass(PROCESSOR_MAPPING[DeepSeekJanusConfig], JanusProProcessor)
    assert TOKENIZER_MAPPING[JanusProConfig] is TokenizersBackend
    assert TOKENIZER_MAPPING[DeepSeekJanusConfig] is TokenizersBackend
    image_processors = IMAGE_PROCESSOR_MAPPING[JanusProConfig]
    assert JanusProImageProcessor in (image_processors.values() if isinstance(image_processors, dict) else image_processors)


def test_deepseek_weight_conversion_is_registered_only_while_loading_and_one_way():
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    from transformers_janus.deepseek_format import DeepSeekConverter, DeepSeekRenaming, deepseek_weight_conversion

    # A model built from a config has no mapping (transformers would treat it as two-way and revert it on save).
    assert not get_checkpoint_conversion_mapping("janus_pro")
    with deepseek_weight_conversion(), deepseek_weight_conversion():  # reentrant
        transforms = get_checkpoint_conversion_mapping("janus_pro")
    assert not get_checkpoint_conversion_mapping("janus_pro")
    assert isinstance(transforms[0], DeepSeekRenaming)
    assert any(isinstance(transform, DeepSeekConverter) for transform in transforms)
    for transform in transforms:
        # Our own names pass through every transform unchanged, loading and saving alike.
        for key in ("model.vision_model.encoder.layers.0.self_attn.q_proj.weight", "lm_head.weight",
                    "model.vq_model.quantize.embedding.weight", "vq_model.encoder.mid_block.attentions.0.to_q.weight"):
            assert transform.rename_source_key(key) == (key, None)
            assert transform.reverse_transform().rename_source_key(key) == (key, None)
