"""The training benchmark's smoke run: every contestant trains on the same data; only counts are asserted (never time)."""

import importlib.util
from pathlib import Path

import pytest


BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "bench_train.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_measures_every_contestant_on_the_same_data(bench, tmp_path):
    (arguments,) = bench.make_parser().parse_args_into_dataclasses(
        ["--quick", "--output_json", str(tmp_path / "bench.json"), "--num_threads", "1"]
    )
    report = bench.main(arguments)
    by_name = {m["implementation"]: m for m in report["measurements"]}
    assert set(by_name) == set(bench.IMPLEMENTATIONS)
    assert all(m["steps"] == arguments.steps and m["real_tokens"] > 0 for m in by_name.values())
    # The same records through our three data paths: the same real tokens, fewer padded ones when packed
    packed, masked, padded = by_name["ours_packed"], by_name["ours_packed_masked"], by_name["ours_padded"]
    assert packed["real_tokens"] == masked["real_tokens"] == padded["real_tokens"]
    assert packed["token_efficiency"] > padded["token_efficiency"]
    assert {row["what"] for row in report["ratios"]} == {what for _, _, what in bench.RATIOS}
    assert report["packing_efficiency_realistic_mix"]["packed"] >= 0.9
    assert (tmp_path / "bench.json").exists()
