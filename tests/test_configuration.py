import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig

from transformers_janus import JanusProConfig


def test_presets_have_published_shapes():
    small = JanusProConfig.janus_pro_1b()
    assert (small.text_config.hidden_size, small.text_config.num_hidden_layers) == (2048, 24)
    assert (small.text_config.intermediate_size, small.text_config.num_attention_heads) == (5632, 16)
    large = JanusProConfig.janus_pro_7b()
    assert (large.text_config.hidden_size, large.text_config.num_hidden_layers) == (4096, 30)
    assert (large.text_config.intermediate_size, large.text_config.num_attention_heads) == (11008, 32)
    for config in (small, large):
        assert config.num_image_tokens == 576 and config.image_token_grid == 24
        assert config.vision_config.hidden_size == 1024 and config.vision_config.image_size == 384
        assert config.vq_config.num_vq_embeddings == 16384 and config.vq_config.vq_embed_dim == 8
        assert config.image_head_hidden_size == config.text_config.hidden_size
        assert config.tie_word_embeddings is False


def test_dict_round_trip_and_auto_config(tmp_path):
    config = JanusProConfig.janus_pro_1b()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, JanusProConfig)
    assert {k: v for k, v in loaded.to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in config.to_dict().items() if k != "_name_or_path"
    }


def test_inconsistent_image_token_count_is_refused():
    with pytest.raises(StrictDataclassClassValidationError, match="num_image_tokens"):
        JanusProConfig(num_image_tokens=100)


def test_token_id_outside_vocabulary_is_refused():
    with pytest.raises(StrictDataclassClassValidationError, match="outside the text vocabulary"):
        JanusProConfig(image_token_id=10**6)
