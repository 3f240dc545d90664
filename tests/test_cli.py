"""The `janus-pro` console script, run as users run it (a subprocess)."""

import json
import subprocess
import sys

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
def test_chat_in_half_precision(checkpoint_dir, fixture_dir, dtype):
    result = run_cli("chat", "--model", checkpoint_dir, "--image", fixture_dir / "und_image.png", "Hi?",
                     "--max-new-tokens", 4, "--dtype", dtype)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


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
