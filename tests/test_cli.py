"""The `janus-pro` console script, run as users run it (a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "transformers_janus.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_chat_streams_the_greedy_answer(checkpoint_dir, fixture_dir, golden_meta):
    result = run_cli(
        "chat", "--model", checkpoint_dir, "--image", fixture_dir / "und_image.png", golden_meta["und_question"],
        "--max-new-tokens", 12,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == golden_meta["und_greedy_text"].strip()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_chat_in_half_precision_gives_the_reference_answer(checkpoint_dir, fixture_dir, golden_meta, dtype, capsys,
                                                           monkeypatch):
    """Half-precision greedy answer tokens equal the fp32 golden ones on the fixture (tests/fixtures/README.md)."""
    from transformers_janus import cli

    loaded_dtypes = []
    load = cli.load_model_and_processor

    def recording_load(*args, **kwargs):
        model, processor = load(*args, **kwargs)
        loaded_dtypes.append(model.dtype)
        return model, processor

    monkeypatch.setattr(cli, "load_model_and_processor", recording_load)
    returncode, out, err = run_main(capsys, "chat", "--model", checkpoint_dir, "--image", fixture_dir / "und_image.png",
                                    golden_meta["und_question"], "--max-new-tokens", 12, "--dtype", dtype)
    assert returncode == 0, err
    assert [str(d) for d in loaded_dtypes] == [f"torch.{dtype}"]
    assert out.strip() == golden_meta["und_greedy_text"].strip()


def test_chat_reports_a_missing_image(checkpoint_dir, tmp_path):
    result = run_cli("chat", "--model", checkpoint_dir, "--image", tmp_path / "nope.png", "What?")
    assert result.returncode == 2
    assert "nope.png" in result.stderr and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_chat_reports_a_file_that_is_not_an_image(checkpoint_dir):
    result = run_cli("chat", "--model", checkpoint_dir, "--image", checkpoint_dir / "config.json", "What?")
    assert result.returncode == 2
    assert "config.json" in result.stderr and "is not an image" in result.stderr and "Traceback" not in result.stderr


def test_chat_reports_a_missing_model(fixture_dir, tmp_path):
    result = run_cli("chat", "--model", tmp_path / "no-model", "--image", fixture_dir / "und_image.png", "What?")
    assert result.returncode == 2
    assert "cannot load the model" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_the_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0 and all(command in result.stdout for command in ("chat", "generate", "convert"))
    chat_help = run_cli("chat", "--help")
    assert chat_help.returncode == 0 and "--max-new-tokens" in chat_help.stdout
    convert_help = run_cli("convert", "--help")
    assert convert_help.returncode == 0 and "--to" in convert_help.stdout and "--dtype" in convert_help.stdout
    generate_help = run_cli("generate", "--help")
    assert generate_help.returncode == 0 and "--guidance-scale" in generate_help.stdout


def test_convert_both_ways_then_chat_on_each(checkpoint_dir, fixture_dir, golden_meta, tmp_path):
    """DeepSeek -> ours -> janus (bf16) -> ours; each result answers the fixture question as the reference did."""
    steps = [(checkpoint_dir, "ours", []), ("ours", "janus", ["--dtype", "bfloat16"]), ("janus", "back", ["--to", "ours", "--dtype", "float32"])]
    for source, destination, options in steps:
        result = run_cli("convert", source, destination, *options, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"to {destination} (" in result.stdout
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "janus_pro"
    assert json.loads((tmp_path / "janus" / "config.json").read_text())["model_type"] == "janus"
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "janus_pro"
    for model_dir in ("ours", "back"):
        chat = run_cli("chat", "--model", tmp_path / model_dir, "--image", fixture_dir / "und_image.png",
                       golden_meta["und_question"], "--max-new-tokens", 12)
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.strip() == golden_meta["und_greedy_text"].strip()


def test_convert_reports_a_missing_source(tmp_path):
    result = run_cli("convert", tmp_path / "missing", tmp_path / "out")
    assert result.returncode == 2
    assert "missing" in result.stderr and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_convert_rejects_an_unknown_target(checkpoint_dir, tmp_path):
    result = run_cli("convert", checkpoint_dir, tmp_path / "out", "--to", "onnx")
    assert result.returncode == 2
    assert "invalid choice: 'onnx'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_convert_rejects_a_directory_that_is_not_a_checkpoint(fixture_dir, tmp_path):
    result = run_cli("convert", fixture_dir, tmp_path / "out")
    assert result.returncode == 2 and "has no config.json" in result.stderr


def test_generate_writes_valid_pngs(checkpoint_dir, tmp_path):
    from PIL import Image

    result = run_cli("generate", "a red square", "-o", tmp_path / "out.png", "--model", checkpoint_dir,
                     "--num-images", 2, "--seed", 7)
    assert result.returncode == 0, result.stderr
    paths = [tmp_path / "out-0.png", tmp_path / "out-1.png"]
    for path in paths:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (64, 64) and image.mode == "RGB"
    again = run_cli("generate", "a red square", "-o", tmp_path / "again.png", "--model", checkpoint_dir, "--seed", 7)
    assert again.returncode == 0, again.stderr
    # Image i depends only on seed + i: alone it gets the same tokens (the VQ decoder's batch of 1 vs 2 may move a
    # pixel by one level at a rounding boundary).
    import numpy as np

    with Image.open(tmp_path / "again.png") as alone, Image.open(paths[0]) as first:
        assert np.abs(np.asarray(alone, dtype=int) - np.asarray(first, dtype=int)).max() <= 1


def test_generate_rejects_a_bad_output_name(checkpoint_dir, tmp_path):
    result = run_cli("generate", "a cat", "-o", tmp_path / "out.txt", "--model", checkpoint_dir)
    assert result.returncode == 2 and "must end in .png" in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Expected failures: one line on stderr, exit status 2, nothing written (in-process: the same `main` the script runs)
# ---------------------------------------------------------------------------------------------------------------


def run_main(capsys, *args):
    from transformers_janus.cli import main

    returncode = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return returncode, captured.out, captured.err


def assert_one_line_error(returncode, err, *fragments):
    """Exit status 2 and one error line (in-process, `main` returns instead of raising: no traceback can escape)."""
    assert returncode == 2
    lines = [line for line in err.splitlines() if line.startswith("janus-pro ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_convert_reports_a_bad_shard_size_before_writing_anything(checkpoint_dir, tmp_path):
    result = run_cli("convert", checkpoint_dir, tmp_path / "out", "--max-shard-size", "banana")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--max-shard-size" in result.stderr or "max_shard_size" in result.stderr
    assert "banana" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, named", [("{not json", "is not valid JSON"), ("[1, 2]", "holds a JSON list")])
def test_convert_reports_a_config_that_is_not_a_json_object(tmp_path, capsys, content, named):
    source = tmp_path / "broken"
    source.mkdir()
    (source / "config.json").write_text(content)
    returncode, _, err = run_main(capsys, "convert", source, tmp_path / "out")
    assert_one_line_error(returncode, err, "config.json", named)
    assert not (tmp_path / "out").exists()


def test_convert_refuses_a_checkpoint_missing_a_tensor(checkpoint_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    returncode, _, err = run_main(capsys, "convert", checkpoint_dir, tmp_path / "ours")
    assert returncode == 0, err
    returncode, _, err = run_main(capsys, "convert", tmp_path / "ours", tmp_path / "janus")
    assert returncode == 0, err
    for name, key in (("ours", "model.gen_head.vision_head.bias"), ("janus", "model.generation_head.vision_head.bias")):
        state_dict = load_file(tmp_path / name / "model.safetensors")
        del state_dict[key]
        save_file(state_dict, tmp_path / name / "model.safetensors", metadata={"format": "pt"})
        returncode, _, err = run_main(capsys, "convert", tmp_path / name, tmp_path / "out", "--to", "ours" if name == "janus" else "janus")
        assert_one_line_error(returncode, err, "missing tensors", key)
        assert not (tmp_path / "out").exists()


def test_convert_refuses_the_source_as_destination(checkpoint_dir, capsys):
    before = (checkpoint_dir / "config.json").read_bytes()
    returncode, _, err = run_main(capsys, "convert", checkpoint_dir, checkpoint_dir)
    assert_one_line_error(returncode, err, "same directory")
    assert (checkpoint_dir / "config.json").read_bytes() == before


def test_generate_checks_the_output_before_loading_the_model(tmp_path, capsys):
    """A model that does not exist shows that the output is refused first (nothing loaded, nothing generated)."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.png").mkdir()
    missing_model = tmp_path / "no-model"
    returncode, _, err = run_main(capsys, "generate", "a cat", "-o", tmp_path / "file" / "out.png", "--model", missing_model)
    assert_one_line_error(returncode, err, "which is a file")
    returncode, _, err = run_main(capsys, "generate", "a cat", "-o", tmp_path / "folder.png", "--model", missing_model)
    assert_one_line_error(returncode, err, "is a directory")
    returncode, _, err = run_main(capsys, "generate", "a cat", "-o", tmp_path / "out.gif", "--model", missing_model)
    assert_one_line_error(returncode, err, "must end in .png")
    assert sorted(os.listdir(tmp_path)) == ["file", "folder.png"] and os.listdir(tmp_path / "folder.png") == []


def test_generate_refuses_to_overwrite_without_overwrite(tmp_path, capsys):
    missing_model = tmp_path / "no-model"
    (tmp_path / "out.png").write_bytes(b"old single")
    returncode, _, err = run_main(capsys, "generate", "a cat", "-o", tmp_path / "out.png", "--model", missing_model)
    assert_one_line_error(returncode, err, "out.png", "already exist", "--overwrite")
    (tmp_path / "set-1.png").write_bytes(b"old 1")
    returncode, _, err = run_main(capsys, "generate", "a cat", "-o", tmp_path / "set.png", "--num-images", 2, "--model", missing_model)
    assert_one_line_error(returncode, err, "set-1.png", "--overwrite")
    (tmp_path / "set-1.png").unlink()
    (tmp_path / "set-3.png").write_bytes(b"stale 3")  # an earlier run of 4 images
    returncode, _, err = run_main(capsys, "generate", "a cat", "-o", tmp_path / "set.png", "--num-images", 2, "--model", missing_model)
    assert_one_line_error(returncode, err, "set-3.png", "earlier run")
    assert (tmp_path / "out.png").read_bytes() == b"old single" and (tmp_path / "set-3.png").read_bytes() == b"stale 3"


def test_generate_overwrite_replaces_the_set_and_removes_stale_numbered_files(checkpoint_dir, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "set-0.png").write_bytes(b"old 0")
    (tmp_path / "set-2.png").write_bytes(b"stale 2")
    (tmp_path / "set-x.png").write_bytes(b"not numbered: kept")
    returncode, out, err = run_main(
        capsys, "generate", "a red square", "-o", tmp_path / "set.png", "--num-images", 2, "--model", checkpoint_dir,
        "--overwrite", "--device", "cpu",
    )
    assert returncode == 0, err
    assert f"Wrote {tmp_path / 'set-0.png'}" in out and f"Wrote {tmp_path / 'set-1.png'}" in out
    assert f"Removed {tmp_path / 'set-2.png'}" in out
    assert sorted(os.listdir(tmp_path)) == ["set-0.png", "set-1.png", "set-x.png"]  # no temporary file left
    for name in ("set-0.png", "set-1.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size == (64, 64)
    assert (tmp_path / "set-x.png").read_bytes() == b"not numbered: kept"


def test_an_interrupted_save_keeps_the_previous_file(tmp_path):
    from transformers_janus.cli import save_images_atomically

    class FailingImage:
        def save(self, path):
            Path(path).write_bytes(b"\x89PNG\r\n\x1a\n half")  # a 16-byte start of a PNG, then the failure
            raise KeyboardInterrupt

    (tmp_path / "out.png").write_bytes(b"previous image")
    with pytest.raises(KeyboardInterrupt):
        save_images_atomically([FailingImage()], [tmp_path / "out.png"])
    assert (tmp_path / "out.png").read_bytes() == b"previous image"
    assert os.listdir(tmp_path) == ["out.png"]


def test_device_and_dtype_auto():
    import torch

    from transformers_janus.cli import resolve_device, resolve_dtype

    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "mps") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_is_refused(checkpoint_dir, fixture_dir, capsys):
    returncode, _, err = run_main(
        capsys, "chat", "--model", checkpoint_dir, "--image", fixture_dir / "und_image.png", "Hi?", "--device", "cuda"
    )
    assert_one_line_error(returncode, err, "--device cuda", "no CUDA")


def test_an_uncached_hub_id_fails_fast_offline_and_without_network(fixture_dir, tmp_path, capsys, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    image = fixture_dir / "und_image.png"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    returncode, _, err = run_main(capsys, "chat", "--model", "someone/not-cached", "--image", image, "Hi?")
    assert_one_line_error(returncode, err, "someone/not-cached", "--model", "HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: no network
    returncode, _, err = run_main(capsys, "generate", "a cat", "-o", tmp_path / "x.png", "--model", "someone/not-cached")
    assert_one_line_error(returncode, err, "cannot be reached", "--model", "HF_HUB_OFFLINE=1")
    assert time.monotonic() - start < 30
    assert not (tmp_path / "x.png").exists()
