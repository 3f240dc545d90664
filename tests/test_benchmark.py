"""The text-to-image benchmark: a few-second in-process smoke run, and the full quick run (slow)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformers_janus.utils import cpu_has_bf16_kernels

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "bench_generate.py"
BF16_PREPACK = cpu_has_bf16_kernels()


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_generate", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_tokenizer_is_built_without_fixture_files(bench):
    tokenizer = bench.build_tokenizer()
    for token in bench.SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
        assert tokenizer(token, add_special_tokens=False).input_ids == [tokenizer.convert_tokens_to_ids(token)]
    ids = tokenizer("a red square").input_ids
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 1 + len("a red square")
    assert tokenizer.decode(ids[1:]) == "a red square"


def test_smoke_run_in_process_makes_the_reference_greedy_tokens(bench, tmp_path):
    """A few seconds: the tiny model, float32, batch 1, the default and fast paths against the reference loop."""
    (arguments,) = bench.make_parser().parse_args_into_dataclasses(
        [
            "--quick",
            "--dtypes", "float32",
            "--batch_sizes", "1",
            "--implementations", "ours", "ours_fast", "ours_jacobi", "reference",
            "--output_json", str(tmp_path / "results.json"),
        ]
    )
    import transformers

    verbosity = transformers.logging.get_verbosity()
    try:
        results = bench.main(arguments)
    finally:  # main() quiets transformers for the timed runs; the rest of the suite expects its defaults
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    check = results["greedy_check"]["float32"]
    assert check["passed"]
    assert check["required"] == [
        "ours == reference", "ours_fast == reference", "ours_jacobi == reference", "ours_fast == ours"
    ]
    measured = [(m["implementation"], m["batch_size"]) for m in results["measurements"]]
    assert measured == [("ours", 1), ("ours_fast", 1), ("ours_jacobi", 1), ("reference", 1)]
    assert all(m["tokens_per_second"] > 0 for m in results["measurements"])
    passes = {m["implementation"]: m["forward_passes"] for m in results["measurements"]}
    assert passes["ours"] == passes["reference"] == results["num_image_tokens"]
    assert passes["ours_jacobi"] <= results["num_image_tokens"]
    assert {row["implementation"] for row in results["ratios"]} == {"ours", "ours_fast", "ours_jacobi"}
    assert results["machine"].startswith(bench.describe_machine(torch.device("cpu")).split(",")[0])


def test_jacobi_decoding_on_the_shipped_model_needs_fewer_passes_than_tokens(bench, tmp_path):
    """The trained shapes model, float32, batch 1: Jacobi decoding's greedy tokens are the reference loop's, and its
    sampled image takes fewer than half as many forward passes as tokens (measured: 2.6-3.4x fewer, docs/performance.md)."""
    (arguments,) = bench.make_parser().parse_args_into_dataclasses(
        [
            "--model", "shapes",
            "--dtypes", "float32",
            "--batch_sizes", "1",
            "--implementations", "ours", "ours_jacobi", "reference",
        ]
    )
    import transformers

    verbosity = transformers.logging.get_verbosity()
    try:
        results = bench.main(arguments)
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
    assert results["greedy_check"]["float32"]["passed"]
    assert "ours_jacobi == reference" in results["greedy_check"]["float32"]["required"]
    jacobi = next(m for m in results["measurements"] if m["implementation"] == "ours_jacobi")
    assert jacobi["tokens_per_pass"] > 2
    assert 0 < jacobi["draft_acceptance_rate"] < 1


@pytest.mark.slow
def test_quick_benchmark_runs_and_all_implementations_make_the_same_greedy_tokens(tmp_path):
    results_file = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--output_json", str(results_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(results_file.read_text())
    assert results["greedy_check_passed"]
    for dtype in ("float32", "bfloat16"):
        check = results["greedy_check"][dtype]
        assert check["passed"] and check["required"]
        # In float32 ours, the pipeline and the built-in compute what the reference loop computes, bit for bit.
        for name in ("ours", "ours_static", "ours_fast", "pipeline", "builtin"):
            assert check["tokens"][name]["vs_reference"]["identical"] or dtype != "float32", name
        assert check["tokens"]["ours_static"]["vs_ours"]["identical"]
        assert check["tokens"]["ours_fast"]["vs_ours"]["identical"]
    # Prepacked bfloat16 needs oneDNN bfloat16 (avx512_bf16 / AMX): where the CPU lacks it the run skips it, saying so
    prepacked_dtypes = ("float32", "bfloat16") if BF16_PREPACK else ("float32",)
    if not BF16_PREPACK:
        assert "avx512_bf16" in results["skipped"]["bfloat16"]
    measured = {(m["implementation"], m["dtype"], m["batch_size"]) for m in results["measurements"]}
    assert len(measured) == (8 * 2 + 2 * len(prepacked_dtypes)) * 2
    assert all(m["tokens_per_second"] > 0 for m in results["measurements"])
    assert {row["implementation"] for row in results["ratios"]} == {
        "ours",
        "ours_static",
        "ours_fast",
        "ours_prepacked",
        "ours_jacobi",
        "ours_jacobi_fast",
        "pipeline",
        "pipeline_prepacked",
    }
    assert "| implementation | dtype | batch |" in completed.stderr + completed.stdout
