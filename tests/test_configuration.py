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


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"text_config": {"hidden_size": 0}}, "text_config.hidden_size"),
        ({"vision_config": {"hidden_size": 0}}, "vision_config.hidden_size"),
        ({"vision_config": {"patch_size": 0}}, "vision_config.patch_size"),
        ({"vq_config": {"num_vq_embeddings": 0}}, "vq_config.num_vq_embeddings"),
        ({"text_config": {"num_hidden_layers": -1}}, "text_config.num_hidden_layers"),
        ({"vq_config": {"block_out_channels": [128, 0]}}, r"vq_config.block_out_channels\[1\]"),
    ],
)
def test_sizes_that_are_not_positive_are_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=rf"must be positive integers: {{'{name}': -?\d+}}"):
        JanusProConfig(**kwargs)


def test_default_token_ids_that_do_not_fit_a_small_vocabulary_become_none():
    """The defaults are DeepSeek's ids (vocabulary 102400); a small model must set its own, explicit ones are checked."""
    config = JanusProConfig(text_config={"vocab_size": 99}, image_token_id=0)
    assert config.image_token_id == 0
    assert (config.boi_token_id, config.eoi_token_id, config.pad_token_id) == (None, None, None)
    assert JanusProConfig().pad_token_id == 100015
    with pytest.raises(StrictDataclassClassValidationError, match="outside the text vocabulary"):
        JanusProConfig(text_config={"vocab_size": 99}, image_token_id=120)
