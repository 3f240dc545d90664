"""The `janus-pro` console script, run as users run it (a subprocess)."""

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
    assert result.returncode == 0 and "chat" in result.stdout
    chat_help = run_cli("chat", "--help")
    assert chat_help.returncode == 0 and "--max-new-tokens" in chat_help.stdout
