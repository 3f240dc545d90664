"""The opt-in fast decode path (`fast_decoding=True`, `prepack_weights=True`): same tokens as the default path."""

import pytest
import torch

from transformers_janus.fast_image_decoding import (
    JanusProFastImageDecoder,
    JanusProInPlaceCacheLayer,
    JanusProPrepackedLinear,
    in_place_cache,
    prepacked_decoder,
)
from transformers_janus.utils import cpu_has_bf16_kernels

BF16_PREPACK = cpu_has_bf16_kernels()
NO_BF16_REASON = "this CPU lacks avx512_bf16/AMX, so oneDNN cannot run bfloat16 products (prepack_weights is refused)"


@pytest.fixture(scope="module")
def prompt_rows(golden):
    return golden["gen.prompt_ids"][None].repeat(2, 1)


def sampled(model, batch, mask=None, seeds=(5, 6), **kwargs):
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return model.generate_images(batch, attention_mask=mask, generator=generators, output_logits=True, **kwargs)


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_fast_decoding_computes_what_the_default_path_computes(model, left_padded_image_prompts, cache_implementation):
    from reference import reference_generate

    batch, mask, prompts = left_padded_image_prompts
    default_greedy = model.generate_images(batch, attention_mask=mask, top_k=1, output_logits=True)
    fast_greedy = model.generate_images(
        batch, attention_mask=mask, top_k=1, output_logits=True, fast_decoding=True,
        cache_implementation=cache_implementation,
    )
    assert torch.equal(fast_greedy.image_tokens, default_greedy.image_tokens)
    assert torch.equal(fast_greedy.logits, default_greedy.logits)  # in-place cache + direct layers: bit for bit
    for row, prompt in enumerate(prompts):  # and the tokens are DeepSeek's loop's on each prompt alone
        assert fast_greedy.image_tokens[row].tolist() == reference_generate(model, prompt, 1, greedy=True)[0].tolist()
    default_sampled = sampled(model, batch, mask)
    fast_sampled = sampled(model, batch, mask, fast_decoding=True, cache_implementation=cache_implementation)
    assert torch.equal(fast_sampled.image_tokens, default_sampled.image_tokens)
    assert torch.equal(fast_sampled.logits, default_sampled.logits)


def test_fast_decoding_calls_the_decoder_layers_directly_for_a_sdpa_llama(model):
    decoder = JanusProFastImageDecoder(model, 4, 10, 26, None, static=False, prepack_weights=False)
    assert decoder.direct and all(isinstance(layer, JanusProInPlaceCacheLayer) for layer in decoder.cache.layers)


def test_fast_decoding_falls_back_to_the_language_model_forward_without_sdpa(checkpoint_dir, left_padded_image_prompts):
    from transformers_janus import JanusProForConditionalGeneration

    eager = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir, attn_implementation="eager").eval()
    assert eager.model.language_model.config._attn_implementation == "eager"
    decoder = JanusProFastImageDecoder(eager, 4, 10, 26, None, static=False, prepack_weights=False)
    assert not decoder.direct
    batch, mask, _ = left_padded_image_prompts
    default = eager.generate_images(batch, attention_mask=mask, top_k=1, output_logits=True)
    fast = eager.generate_images(batch, attention_mask=mask, top_k=1, output_logits=True, fast_decoding=True)
    assert torch.equal(fast.image_tokens, default.image_tokens)
    assert torch.equal(fast.logits, default.logits)


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_prepacked_weights_keep_the_reference_greedy_tokens(model, golden, prompt_rows, cache_implementation):
    output = model.generate_images(
        prompt_rows, top_k=1, output_logits=True, prepack_weights=True, cache_implementation=cache_implementation
    )
    assert output.image_tokens.tolist() == golden["gen.greedy_image_tokens"].tolist()
    # the fp32 bound of tests/fixtures/README.md: measured 8.6e-7
    torch.testing.assert_close(output.logits[0], golden["gen.cfg_logits_sample0"], atol=1e-5, rtol=0)


def test_prepacked_weights_share_the_model_and_leave_it_unchanged(model, prompt_rows):
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    decoder = prepacked_decoder(model, batch_size=4)
    layer = decoder.model.language_model.layers[0]
    assert isinstance(layer.self_attn.q_proj, JanusProPrepackedLinear)
    assert isinstance(model.model.language_model.layers[0].self_attn.q_proj, torch.nn.Linear)
    assert layer.input_layernorm is model.model.language_model.layers[0].input_layernorm
    assert decoder.model.vq_model is model.model.vq_model
    model.generate_images(prompt_rows, prepack_weights=True, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())


@pytest.mark.skipif(not BF16_PREPACK, reason=NO_BF16_REASON)
def test_bfloat16_prepacked_sampling_equals_the_default(model, checkpoint_dir, prompt_rows):
    twin = type(model).from_pretrained(checkpoint_dir, dtype=torch.bfloat16).eval()

    def sample(**kwargs):
        generators = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
        return twin.generate_images(prompt_rows, generator=generators, output_logits=True, **kwargs)

    default, prepacked = sample(), sample(prepack_weights=True)
    assert torch.equal(default.image_tokens, prepacked.image_tokens)
    assert torch.equal(default.logits, prepacked.logits)


@pytest.mark.skipif(BF16_PREPACK, reason="this CPU runs oneDNN bfloat16 products")
def test_bfloat16_prepacking_is_refused_naming_the_missing_cpu_feature(checkpoint_dir, prompt_rows):
    from transformers_janus import JanusProForConditionalGeneration

    twin = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir, dtype=torch.bfloat16).eval()
    calls = []
    handle = twin.model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"prepack_weights=True.*avx512_bf16"):
            twin.generate_images(prompt_rows, top_k=1, prepack_weights=True)
    finally:
        handle.remove()
    assert calls == []  # refused before the prefill


def test_dynamic_and_static_caches_give_identical_logits(model, left_padded_image_prompts):
    batch, mask, _ = left_padded_image_prompts
    outputs = [
        model.generate_images(
            batch, attention_mask=mask, output_logits=True, cache_implementation=cache, fast_decoding=True, **sampling
        )
        for cache in ("dynamic", "static")
        for sampling in ({"top_k": 1}, {"generator": [torch.Generator().manual_seed(seed) for seed in (5, 6)]})
    ]
    assert torch.equal(outputs[0].logits, outputs[2].logits) and torch.equal(outputs[1].logits, outputs[3].logits)
    assert torch.equal(outputs[1].image_tokens, outputs[3].image_tokens)


def test_in_place_cache_layer_holds_what_concatenation_holds():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=2)
    growing = in_place_cache(config, prompt_length=3, max_length=9, static=False)
    static = in_place_cache(config, prompt_length=3, max_length=9, static=True)
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


def test_in_place_cache_leaves_sliding_window_models_to_transformers_caches():
    from transformers import MistralConfig

    config = MistralConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=2)
    config.sliding_window = 4
    assert in_place_cache(config, prompt_length=3, max_length=9, static=False) is None


def test_prepacking_is_refused_where_it_cannot_run(model, checkpoint_dir, prompt_rows):
    half = type(model).from_pretrained(checkpoint_dir, dtype=torch.float16).eval()
    with pytest.raises(ValueError, match="prepack_weights"):
        half.generate_images(prompt_rows, top_k=1, prepack_weights=True)


def test_peft_models_decode_on_the_fast_path_and_prepacking_refuses_them_by_name(checkpoint_dir, prompt_rows):
    peft = pytest.importorskip("peft")
    from transformers_janus import JanusProForConditionalGeneration

    base = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir).eval()
    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    wrapped = peft.get_peft_model(base, lora).eval()
    default = wrapped.generate_images(prompt_rows, top_k=1, output_logits=True)
    fast = wrapped.generate_images(prompt_rows, top_k=1, output_logits=True, fast_decoding=True)
    assert torch.equal(fast.image_tokens, default.image_tokens) and torch.equal(fast.logits, default.logits)
    with pytest.raises(ValueError, match=r"prepack_weights=True.*PEFT adapter layer.*merge_and_unload"):
        wrapped.generate_images(prompt_rows, top_k=1, prepack_weights=True)
    merged = wrapped.merge_and_unload()
    prepacked = merged.generate_images(prompt_rows, top_k=1, output_logits=True, prepack_weights=True)
    # merged weights W + BA round differently from the separate LoRA product: measured 1.0-1.2e-6
    torch.testing.assert_close(prepacked.logits, default.logits, atol=2e-5, rtol=0)
