"""DeepSeek's format -> ours: the converted checkpoint computes what the original does, in every dtype asked for."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from transformers_janus import JanusProForConditionalGeneration, JanusProProcessor
from transformers_janus.conversion import (
    JanusConversionError,
    convert_deepseek_to_janus_pro,
    convert_janus_pro_to_janus,
    convert_janus_to_janus_pro,
)


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


# (max, mean) absolute error against fp32 of understanding logits, image-head logits and decoded pixels: the
# half-precision bounds of tests/fixtures/README.md (test_loading.py's); measured bf16 0.016/0.0028, 0.0028/0.00055,
# 0.17/0.011; fp16 0.0031/0.00035, 0.00032/0.00007, 0.021/0.0015.
HALF_TOLERANCES = {"bfloat16": [(0.05, 0.01), (0.05, 0.01), (0.25, 0.03)],
                   "float16": [(0.01, 0.002), (0.01, 0.002), (0.05, 0.005)]}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_conversion_to_half_precision(checkpoint_dir, model, golden, tmp_path, dtype):
    """The converted half checkpoint computes exactly what the original loaded in that dtype does, and stays near fp32."""
    convert_deepseek_to_janus_pro(checkpoint_dir, tmp_path, dtype=dtype)
    converted = JanusProForConditionalGeneration.from_pretrained(tmp_path)
    assert converted.dtype == getattr(torch, dtype)
    original_in_dtype = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir, dtype=getattr(torch, dtype))
    for before, after in zip(outputs_of(original_in_dtype, golden), outputs_of(converted, golden)):
        assert torch.equal(before, after)
    for (max_error, mean_error), fp32, after in zip(HALF_TOLERANCES[dtype], outputs_of(model, golden), outputs_of(converted, golden)):
        assert (after - fp32).abs().max() < max_error and (after - fp32).abs().mean() < mean_error


def test_unknown_dtype_is_refused(checkpoint_dir, tmp_path):
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        convert_deepseek_to_janus_pro(checkpoint_dir, tmp_path, dtype="int8")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint directories: nothing lost, nothing half-written
# ---------------------------------------------------------------------------------------------------------------


def snapshot(directory):
    """Every file below `directory` with its bytes: what "left as it was" compares."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def ours_dir(checkpoint_dir, tmp_path_factory):
    """The fixture converted once to our format (single weight file), shared read-only by the tests below."""
    directory = tmp_path_factory.mktemp("ours") / "ours"
    convert_deepseek_to_janus_pro(checkpoint_dir, directory)
    return directory


def test_reconversion_replaces_the_destination_without_stale_weights(checkpoint_dir, ours_dir, tmp_path):
    destination = tmp_path / "D"
    shutil.copytree(ours_dir, destination)  # an earlier conversion: one model.safetensors, float32
    convert_deepseek_to_janus_pro(checkpoint_dir, destination, dtype="bfloat16", max_shard_size="300KB")
    assert not (destination / "model.safetensors").exists()
    assert (destination / "model.safetensors.index.json").exists()
    assert JanusProForConditionalGeneration.from_pretrained(destination).dtype == torch.bfloat16
    assert os.listdir(tmp_path) == ["D"]  # no staging or replaced folder left beside it


def test_failed_conversion_leaves_the_destination_as_it_was(checkpoint_dir, ours_dir, tmp_path, monkeypatch):
    destination = tmp_path / "D"
    shutil.copytree(ours_dir, destination)
    before = snapshot(destination)

    def disk_full(self, directory, *args, **kwargs):
        (Path(directory) / "tokenizer.json").write_text("{")  # a half-written file, then the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(JanusProProcessor, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert_deepseek_to_janus_pro(checkpoint_dir, destination, max_shard_size="300KB")
    with pytest.raises(OSError, match="No space left"):
        convert_deepseek_to_janus_pro(checkpoint_dir, tmp_path / "new" / "E")
    assert snapshot(destination) == before
    assert os.listdir(tmp_path) == ["D"]  # the new destination and its parent were not left behind


@pytest.mark.parametrize(
    "arguments, named",
    [
        ({"max_shard_size": "banana"}, "max_shard_size"),
        ({"max_shard_size": "0GB"}, "max_shard_size"),
        ({"max_shard_size": -1}, "max_shard_size"),
        ({"dtype": "int8"}, "dtype"),
        ({"dtype": torch.int8}, "dtype"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_loaded_or_written(
    checkpoint_dir, ours_dir, tmp_path, monkeypatch, arguments, named
):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(JanusProForConditionalGeneration, "from_pretrained", no_loading)
    destination = tmp_path / "D"
    shutil.copytree(ours_dir, destination)
    before = snapshot(destination)
    for target in (destination, tmp_path / "E"):
        with pytest.raises(ValueError, match=f"`{named}`"):
            convert_deepseek_to_janus_pro(checkpoint_dir, target, **arguments)
    assert snapshot(destination) == before and not (tmp_path / "E").exists()


def test_source_and_destination_that_overlap_are_refused(ours_dir, tmp_path):
    source = tmp_path / "ours"
    shutil.copytree(ours_dir, source)
    before = snapshot(source)
    with pytest.raises(ValueError, match="same directory"):
        convert_deepseek_to_janus_pro(source, source)
    with pytest.raises(ValueError, match="same directory"):
        convert_janus_pro_to_janus(source, tmp_path / "." / "ours")
    with pytest.raises(ValueError, match="holds the source"):
        convert_janus_pro_to_janus(source, tmp_path)
    assert snapshot(source) == before


def test_destination_holding_other_files_is_refused(checkpoint_dir, tmp_path):
    destination = tmp_path / "D"
    destination.mkdir()
    (destination / "notes.txt").write_text("mine")
    (destination / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not part of a checkpoint \(\['notes.txt'\]\)"):
        convert_deepseek_to_janus_pro(checkpoint_dir, destination)
    assert snapshot(destination) == {"config.json": b"{}", "notes.txt": b"mine"}
    with pytest.raises(ValueError, match="is \\(or lies under\\) a file"):
        convert_deepseek_to_janus_pro(checkpoint_dir, destination / "notes.txt" / "out")


def test_checkpoint_of_ours_with_a_missing_or_extra_tensor_is_refused(ours_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(ours_dir, damaged)
    state_dict = load_file(damaged / "model.safetensors")
    del state_dict["model.gen_head.vision_head.bias"]
    state_dict["model.extra.weight"] = torch.zeros(2)
    save_file(state_dict, damaged / "model.safetensors", metadata={"format": "pt"})
    for converter in (convert_deepseek_to_janus_pro, convert_janus_pro_to_janus):
        with pytest.raises(JanusConversionError, match=r"missing tensors \['model\.gen_head\.vision_head\.bias'\]"):
            converter(damaged, tmp_path / "out")
        with pytest.raises(JanusConversionError, match=r"unexpected tensors \['model\.extra\.weight'\]"):
            converter(damaged, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_source_and_wrong_format_are_named(ours_dir, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        convert_deepseek_to_janus_pro(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="'ours' format.*use `convert_janus_pro_to_janus`"):
        convert_janus_to_janus_pro(ours_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()
