"""The text-to-image benchmark's smoke run, and the speed paths of `generate_images` it measures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformers_janus.image_generation import JanusProInPlaceCacheLayer, image_generation_cache

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "bench_generate.py"


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
        for name in ("ours", "ours_static", "pipeline", "builtin"):
            assert check["tokens"][name]["vs_reference"]["identical"] or dtype != "float32", name
        assert check["tokens"]["ours_static"]["vs_ours"]["identical"]
    measured = {(m["implementation"], m["dtype"], m["batch_size"]) for m in results["measurements"]}
    assert len(measured) == 7 * 2 * 2
    assert all(m["tokens_per_second"] > 0 for m in results["measurements"])
    assert {row["implementation"] for row in results["ratios"]} == {
        "ours",
        "ours_static",
        "ours_prepacked",
        "pipeline",
        "pipeline_prepacked",
    }
    assert "| implementation | dtype | batch |" in completed.stderr + completed.stdout


@pytest.fixture(scope="module")
def prompt_rows(golden):
    return golden["gen.prompt_ids"][None].repeat(2, 1)


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_prepacked_weights_keep_the_reference_greedy_tokens(model, golden, prompt_rows, cache_implementation):
    output = model.generate_images(
        prompt_rows, top_k=1, output_logits=True, prepack_weights=True, cache_implementation=cache_implementation
    )
    assert output.image_tokens.tolist() == golden["gen.greedy_image_tokens"].tolist()
    torch.testing.assert_close(output.logits[0], golden["gen.cfg_logits_sample0"], atol=1e-4, rtol=0)


def test_prepacked_weights_share_the_model_and_leave_it_unchanged(model, prompt_rows):
    from transformers_janus.image_generation import JanusProPrepackedLinear, prepacked_decoder

    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    decoder = prepacked_decoder(model, batch_size=4)
    layer = decoder.model.language_model.layers[0]
    assert isinstance(layer.self_attn.q_proj, JanusProPrepackedLinear)
    assert isinstance(model.model.language_model.layers[0].self_attn.q_proj, torch.nn.Linear)
    assert layer.input_layernorm is model.model.language_model.layers[0].input_layernorm
    assert decoder.model.vq_model is model.model.vq_model
    model.generate_images(prompt_rows, prepack_weights=True, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())


def test_bfloat16_prepacked_sampling_equals_the_default(model, checkpoint_dir, prompt_rows):
    twin = type(model).from_pretrained(checkpoint_dir, dtype=torch.bfloat16).eval()

    def sample(**kwargs):
        generators = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
        return twin.generate_images(prompt_rows, generator=generators, output_logits=True, **kwargs)

    default, prepacked = sample(), sample(prepack_weights=True)
    assert torch.equal(default.image_tokens, prepacked.image_tokens)
    assert torch.equal(default.logits, prepacked.logits)


def test_dynamic_and_static_caches_give_identical_logits(model, left_padded_image_prompts):
    batch, mask, _ = left_padded_image_prompts
    outputs = [
        model.generate_images(batch, attention_mask=mask, output_logits=True, cache_implementation=cache, **sampling)
        for cache in ("dynamic", "static")
        for sampling in ({"top_k": 1}, {"generator": [torch.Generator().manual_seed(seed) for seed in (5, 6)]})
    ]
    assert torch.equal(outputs[0].logits, outputs[2].logits) and torch.equal(outputs[1].logits, outputs[3].logits)
    assert torch.equal(outputs[1].image_tokens, outputs[3].image_tokens)


def test_in_place_cache_layer_holds_what_concatenation_holds():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=2)
    growing = image_generation_cache(config, prompt_length=3, max_length=9, static=False)
    static = image_generation_cache(config, prompt_length=3, max_length=9, static=True)
    assert all(isinstance(layer, JanusProInPlaceCacheLayer) for layer in growing.layers + static.layers)
    keys = torch.randn(2, 2, 9, 8)
    values = torch.randn(2, 2, 9, 8)
    for start, end in ((0, 3), (3, 4), (4, 5), (5, 8), (8, 9)):
        for cache in (growing, static):
            found_keys, found_values = cache.update(keys[:, :, start:end], values[:, :, start:end], 0)
            assert torch.equal(found_keys, keys[:, :, :end]) and torch.equal(found_values, values[:, :, :end])
            assert cache.get_seq_length() == end
    assert static.layers[0].key_memory.shape[-2] == 9  # allocated once
    assert growing.layers[0].key_memory.shape[-2] == 9  # 3 -> 6 -> 9 (capped at the image's end)


def test_prepacking_is_refused_where_it_cannot_run(model, checkpoint_dir, prompt_rows):
    half = type(model).from_pretrained(checkpoint_dir, dtype=torch.float16).eval()
    with pytest.raises(ValueError, match="prepack_weights"):
        half.generate_images(prompt_rows, top_k=1, prepack_weights=True)
