"""DeepSeek's format -> ours: the converted checkpoint computes what the original does, in every dtype asked for."""

import json

import pytest
import torch
from PIL import Image

from transformers_janus import JanusProForConditionalGeneration, JanusProProcessor
from transformers_janus.conversion import convert_deepseek_to_janus_pro


@torch.no_grad()
def outputs_of(model, golden):
    """Understanding logits, first-step image-head logits and VQ decode on the fixture inputs."""
    understanding = model(input_ids=golden["und.input_ids"], pixel_values=golden["und.pixel_values"][:, 0]).logits
    hidden = model.model(input_ids=golden["gen.cfg_input_ids"]).last_hidden_state[:, -1]
    return understanding.float(), model.get_image_logits(hidden).float(), model.decode_image_tokens(golden["gen.greedy_image_tokens"]).float()


def test_converted_checkpoint_matches_the_original(checkpoint_dir, model, golden, fixture_dir, tmp_path):
    convert_deepseek_to_janus_pro(checkpoint_dir, tmp_path, max_shard_size="300KB")
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "janus_pro"
    assert (tmp_path / "model.safetensors.index.json").exists()
    converted = JanusProForConditionalGeneration.from_pretrained(tmp_path).eval()
    for before, after in zip(outputs_of(model, golden), outputs_of(converted, golden)):
        assert torch.equal(before, after)
    image = Image.open(fixture_dir / "und_image.png")
    original_inputs = JanusProProcessor.from_pretrained(checkpoint_dir)(text="<image_placeholder>\nHi", images=[image])
    converted_inputs = JanusProProcessor.from_pretrained(tmp_path)(text="<image_placeholder>\nHi", images=[image])
    for key in original_inputs:
        assert torch.equal(original_inputs[key], converted_inputs[key])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_conversion_to_half_precision(checkpoint_dir, model, golden, tmp_path, dtype):
    convert_deepseek_to_janus_pro(checkpoint_dir, tmp_path, dtype=dtype)
    converted = JanusProForConditionalGeneration.from_pretrained(tmp_path)
    assert converted.dtype == getattr(torch, dtype)
    for before, after in zip(outputs_of(model, golden), outputs_of(converted, golden)):
        assert (before - after).abs().mean() < 0.03


def test_unknown_dtype_is_refused(checkpoint_dir, tmp_path):
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        convert_deepseek_to_janus_pro(checkpoint_dir, tmp_path, dtype="int8")
