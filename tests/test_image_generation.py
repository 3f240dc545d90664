"""Classifier-free-guided image-token decoding (`generate_images`) against the reference loop recorded in the fixture."""

import pytest
import torch

from transformers_janus.image_generation import image_logits_warpers
from transformers_janus.utils import unconditional_input_ids

# ~10x the error measured on the fixture (fp32, CPU; table in tests/fixtures/README.md): guided logits up to 1.1e-6
# against DeepSeek's, decoded pixels 1.8e-5.
LOGITS_ATOL = 1e-5
PIXEL_ATOL = 2e-4


@pytest.fixture(scope="module")
def prompt_rows(golden):
    """The fixture's prompt, once per image (the reference made `parallel_size` = 2 images)."""
    return golden["gen.prompt_ids"][None].repeat(2, 1)


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_greedy_tokens_and_guided_logits_match_reference(model, golden, prompt_rows, cache_implementation):
    output = model.generate_images(
        prompt_rows, top_k=1, guidance_scale=5.0, output_logits=True, cache_implementation=cache_implementation
    )
    assert output.image_tokens.tolist() == golden["gen.greedy_image_tokens"].tolist()
    torch.testing.assert_close(output.logits[0], golden["gen.cfg_logits_sample0"], atol=LOGITS_ATOL, rtol=0)
    decoded = model.decode_image_tokens(output.image_tokens)
    torch.testing.assert_close(decoded, golden["gen.decoded"], atol=PIXEL_ATOL, rtol=0)


def test_unconditional_rows_match_reference(golden, model):
    rows = golden["gen.cfg_input_ids"]
    conditional = rows[0::2]
    unconditional = unconditional_input_ids(conditional, torch.ones_like(conditional), model.config.pad_token_id)
    assert unconditional.tolist() == rows[1::2].tolist()


def test_unconditional_rows_keep_the_first_real_token_of_left_padded_rows():
    ids = torch.tensor([[9, 9, 0, 5, 6, 7], [0, 4, 5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    assert unconditional_input_ids(ids, mask, 2).tolist() == [[9, 9, 0, 2, 2, 7], [0, 2, 2, 2, 2, 8]]


def test_same_seed_same_tokens_and_batch_equals_single_runs(model, prompt_rows):
    def generators():
        return [torch.Generator().manual_seed(seed) for seed in (11, 12)]

    first = model.generate_images(prompt_rows, generator=generators()).image_tokens
    again = model.generate_images(prompt_rows, generator=generators()).image_tokens
    assert torch.equal(first, again)
    assert not torch.equal(first[0], first[1])
    for row, generator in enumerate(generators()):
        alone = model.generate_images(prompt_rows[row : row + 1], generator=[generator]).image_tokens
        assert torch.equal(alone[0], first[row])


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_left_padded_rows_match_the_reference_loop_on_each_prompt_alone(
    model, golden, left_padded_image_prompts, cache_implementation
):
    """Each row of a left-padded batch (the short one behind pads) decodes as DeepSeek's loop does on its prompt alone."""
    from reference import reference_generate

    batch, mask, prompts = left_padded_image_prompts
    together = model.generate_images(
        batch, attention_mask=mask, top_k=1, output_logits=True, cache_implementation=cache_implementation
    )
    for row, prompt in enumerate(prompts):
        expected_tokens, expected_logits = reference_generate(model, prompt, 1, greedy=True, output_logits=True)
        assert together.image_tokens[row].tolist() == expected_tokens[0].tolist(), row
        torch.testing.assert_close(together.logits[row], expected_logits[0], atol=LOGITS_ATOL, rtol=0)
    # The long row is the golden prompt: DeepSeek's own tokens and logits for its first image.
    assert together.image_tokens[0].tolist() == golden["gen.greedy_image_tokens"][0].tolist()
    torch.testing.assert_close(together.logits[0], golden["gen.cfg_logits_sample0"], atol=LOGITS_ATOL, rtol=0)


def test_guidance_scale_one_runs_conditional_rows_only(model, prompt_rows):
    seen_batch_sizes = []

    def record(module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        seen_batch_sizes.append(embeds.shape[0])

    handle = model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        unguided = model.generate_images(prompt_rows, guidance_scale=1.0, top_k=1, output_logits=True)
    finally:
        handle.remove()
    assert set(seen_batch_sizes) == {2}
    hidden = model.model(input_ids=prompt_rows).last_hidden_state[:, -1]
    # measured 0 (the same products); 1e-6 is a few float32 steps of these logits
    torch.testing.assert_close(unguided.logits[:, 0], model.get_image_logits(hidden), atol=1e-6, rtol=0)


def test_negative_prompt_replaces_the_pad_rows(model, golden, checkpoint_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    prompt = golden["gen.prompt_ids"][None]
    negative = torch.tensor([tokenizer("<|User|>: a blue circle\n\n<|Assistant|>:<begin_of_image>").input_ids])
    default = model.generate_images(prompt, top_k=1, output_logits=True)
    with_negative = model.generate_images(prompt, negative_input_ids=negative, top_k=1, output_logits=True)
    assert not torch.allclose(default.logits[:, 0], with_negative.logits[:, 0])
    conditional = model.get_image_logits(model.model(input_ids=prompt).last_hidden_state[:, -1])
    unconditional = model.get_image_logits(model.model(input_ids=negative).last_hidden_state[:, -1])
    expected = unconditional + 5.0 * (conditional - unconditional)
    torch.testing.assert_close(with_negative.logits[:, 0], expected, atol=5e-6, rtol=0)  # measured 3.6e-7


def test_filtering_keeps_top_k_and_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))

    def kept(**kwargs):
        return torch.isfinite(image_logits_warpers(**kwargs)(None, logits.clone())).tolist()

    assert kept(top_k=2) == [[True, True, False, False]]
    assert kept(top_p=0.7) == [[True, True, False, False]]
    assert kept(top_p=0.1) == [[True, False, False, False]]
    assert image_logits_warpers(temperature=1.0, top_p=1.0) == []  # warpers that change nothing are left out


def test_wrong_generator_count_is_refused(model, prompt_rows):
    with pytest.raises(ValueError, match="Got 3 generators for 2 prompt rows"):
        model.generate_images(prompt_rows, generator=[torch.Generator() for _ in range(3)])


# The reference loop (tests/reference.py) is the oracle of the tests and the benchmark: anchored here to DeepSeek's numbers


def test_reference_loop_reproduces_deepseeks_golden_tokens_and_logits(model, golden):
    from reference import reference_generate

    tokens, logits = reference_generate(model, golden["gen.prompt_ids"], 2, greedy=True, output_logits=True)
    assert tokens.tolist() == golden["gen.greedy_image_tokens"].tolist()
    torch.testing.assert_close(logits[0], golden["gen.cfg_logits_sample0"], atol=LOGITS_ATOL, rtol=0)


def test_sampling_uses_transformers_warpers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from transformers_janus.image_generation import image_logits_warpers

    warpers = image_logits_warpers(temperature=0.7, top_k=5, top_p=0.9)
    assert [type(w) for w in warpers] == [TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper]
    assert len(image_logits_warpers()) == 0  # nothing to change: no work per step
    logits = torch.randn(3, 50)
    expected = TopPLogitsWarper(0.9)(None, TopKLogitsWarper(5)(None, logits / 0.7))
    assert torch.equal(warpers(None, logits), expected)


# `model.generate(..., generation_mode="image")`: the built-in Janus's API on our model


def test_generate_in_image_mode_gives_the_tokens_of_generate_images(model, prompt_rows):
    greedy = model.generate_images(prompt_rows, top_k=1).image_tokens
    assert torch.equal(model.generate(input_ids=prompt_rows, generation_mode="image", do_sample=False), greedy)
    sampled = model.generate_images(
        prompt_rows, guidance_scale=3.0, temperature=0.8, top_k=20, top_p=0.9,
        generator=[torch.Generator().manual_seed(seed) for seed in (1, 2)],
    )
    found = model.generate(
        prompt_rows, attention_mask=torch.ones_like(prompt_rows), generation_mode="image", do_sample=True,
        guidance_scale=3.0, temperature=0.8, top_k=20, top_p=0.9,
        generator=[torch.Generator().manual_seed(seed) for seed in (1, 2)],
    )
    assert torch.equal(found, sampled.image_tokens)


def test_generate_in_image_mode_returns_a_generate_output_with_logits(model, prompt_rows):
    expected = model.generate_images(prompt_rows[:1], top_k=1, output_logits=True)
    output = model.generate(
        # transformers refuses `num_return_sequences` for greedy search; top_k=1 sampling is greedy
        input_ids=prompt_rows[:1], generation_mode="image", do_sample=True, top_k=1, num_return_sequences=2,
        return_dict_in_generate=True, output_logits=True,
    )
    assert torch.equal(output.sequences, expected.image_tokens.repeat(2, 1))
    assert len(output.logits) == model.config.num_image_tokens
    # two rows instead of one: the batched products may round differently
    torch.testing.assert_close(output.logits[3], expected.logits[:, 3].repeat(2, 1), atol=1e-5, rtol=0)  # measured 8.3e-7


def test_generate_in_text_mode_is_transformers_generate(model, prompt_rows):
    plain = model.generate(input_ids=prompt_rows, max_new_tokens=3, do_sample=False)
    text = model.generate(input_ids=prompt_rows, max_new_tokens=3, do_sample=False, generation_mode="text")
    assert text.shape == (2, prompt_rows.shape[1] + 3) and torch.equal(text, plain)


def test_generate_refuses_unknown_modes_and_arguments(model, prompt_rows):
    with pytest.raises(ValueError, match="`generation_mode` must be 'text' or 'image', got 'video'"):
        model.generate(input_ids=prompt_rows, generation_mode="video")
    with pytest.raises(ValueError, match=r"not used by `generation_mode='image'`: \['colour'\]"):
        model.generate(input_ids=prompt_rows, generation_mode="image", colour="red")
    with pytest.raises(ValueError, match="num_beams=1"):
        model.generate(input_ids=prompt_rows, generation_mode="image", num_beams=2)


# The step callback contract (the pipeline's `callback_on_step_end` relies on it)


def test_step_callback_sees_the_tokens_so_far_and_may_stop(model, prompt_rows):
    full = model.generate_images(prompt_rows, top_k=1, output_logits=True)
    seen = []

    def stop_after_four(step, image_tokens):
        seen.append(image_tokens.clone())
        return {"stop": True} if step == 4 else None

    stopped = model.generate_images(prompt_rows, top_k=1, output_logits=True, step_callback=stop_after_four)
    assert [tokens.shape for tokens in seen] == [(2, step + 1) for step in range(5)]
    assert torch.equal(seen[-1], full.image_tokens[:, :5])
    assert stopped.image_tokens.shape == (2, 5) and stopped.logits.shape == (2, 5, full.logits.shape[-1])
    assert torch.equal(stopped.image_tokens, full.image_tokens[:, :5])
    assert torch.equal(stopped.logits, full.logits[:, :5])


def test_step_callback_replacing_the_last_column_forces_what_the_next_step_reads(model, prompt_rows):
    """Forcing every token: the logits are then the image head over the prompt followed by the forced tokens."""
    num_tokens = model.config.num_image_tokens
    forced = torch.randint(0, model.config.vq_config.num_vq_embeddings, (2, num_tokens), generator=torch.Generator().manual_seed(0))

    def force(step, image_tokens):
        return {"image_tokens": forced[:, : step + 1]}

    output = model.generate_images(prompt_rows, guidance_scale=1.0, top_k=1, output_logits=True, step_callback=force)
    assert torch.equal(output.image_tokens, forced)
    with torch.no_grad():
        embeds = torch.cat([model.get_input_embeddings()(prompt_rows), model.get_image_token_embeddings(forced[:, :-1])], 1)
        hidden = model.model(inputs_embeds=embeds).last_hidden_state[:, prompt_rows.shape[1] - 1 :]
        expected = model.get_image_logits(hidden).float()
    torch.testing.assert_close(output.logits, expected, atol=2e-6, rtol=0)  # measured 1.5e-7


def test_step_callback_replacing_earlier_columns_changes_only_the_output(model, prompt_rows):
    full = model.generate_images(prompt_rows, top_k=1, output_logits=True)

    def rewrite_first(step, image_tokens):
        if step == 5:
            replaced = image_tokens.clone()
            replaced[:, 0] = 7
            return {"image_tokens": replaced}
        return None

    rewritten = model.generate_images(prompt_rows, top_k=1, output_logits=True, step_callback=rewrite_first)
    assert rewritten.image_tokens[:, 0].tolist() == [7, 7]
    assert torch.equal(rewritten.image_tokens[:, 1:], full.image_tokens[:, 1:])
    assert torch.equal(rewritten.logits, full.logits)  # the KV cache already held the first token


@pytest.mark.parametrize(
    "returned, message",
    [
        (["stop"], "must return None or a dict, got list"),
        ({"tokens": None}, r"unknown keys \['tokens'\]"),
        ({"image_tokens": torch.zeros(2, 3, dtype=torch.long)}, r"of shape \(2, 1\).*got \(2, 3\)"),
        ({"image_tokens": torch.zeros(2, 1)}, "integer `image_tokens`, got torch.float32"),
    ],
)
def test_step_callback_returning_something_else_is_refused(model, prompt_rows, returned, message):
    with pytest.raises(ValueError, match=message):
        model.generate_images(prompt_rows, top_k=1, step_callback=lambda step, tokens: returned)


# Sampling settings that would decode garbage are refused before any work


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"guidance_scale": float("nan")}, "`guidance_scale` must be a finite number"),
        ({"guidance_scale": float("inf")}, "`guidance_scale` must be a finite number"),
        ({"temperature": float("nan")}, "`temperature` must be a finite number > 0"),
        ({"temperature": 0.0}, "`temperature` must be a finite number > 0"),
        ({"temperature": -1.0, "top_k": 1}, "`temperature` must be a finite number > 0"),
        ({"top_k": 0}, "`top_k` must be a positive integer"),
        ({"top_k": 2.5}, "`top_k` must be a positive integer"),
        ({"top_p": 0.0}, r"`top_p` must be a number in \(0, 1\]"),
        ({"top_p": 1.5}, r"`top_p` must be a number in \(0, 1\]"),
        ({"top_p": float("nan")}, r"`top_p` must be a number in \(0, 1\]"),
        ({"cache_implementation": "paged"}, "`cache_implementation` must be 'dynamic' or 'static'"),
    ],
)
def test_bad_sampling_settings_are_refused_before_any_work(model, prompt_rows, kwargs, message):
    calls = []
    handle = model.model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            model.generate_images(prompt_rows, **kwargs)
    finally:
        handle.remove()
    assert calls == []


@torch.no_grad()
def test_long_prompt_and_eager_attention_match_the_reference_loop(checkpoint_dir, golden, tokenizer_for_long_prompt):
    """Positions far past the golden prompt's ~100 (here ~700 of the 1024 context) and the eager-attention decode path."""
    from reference import reference_generate

    from transformers_janus import JanusProForConditionalGeneration

    prompt = tokenizer_for_long_prompt
    for attn_implementation in ("sdpa", "eager"):
        model = JanusProForConditionalGeneration.from_pretrained(
            checkpoint_dir, attn_implementation=attn_implementation
        ).eval()
        expected_tokens, expected_logits = reference_generate(model, prompt, 1, greedy=True, output_logits=True)
        output = model.generate_images(prompt[None], top_k=1, output_logits=True)
        assert output.image_tokens.tolist() == expected_tokens.tolist(), attn_implementation
        torch.testing.assert_close(output.logits, expected_logits, atol=LOGITS_ATOL, rtol=0)  # measured 6.6e-7


@pytest.fixture(scope="module")
def tokenizer_for_long_prompt(checkpoint_dir):
    """A ~700-token text-to-image prompt in DeepSeek's format (the golden prompt reaches position ~100 only)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    text = "a red square on the left of a blue circle, " * 60
    ids = tokenizer(f"<|User|>: {text}\n\n<|Assistant|>:<begin_of_image>").input_ids
    assert 500 < len(ids) < 1024 - 16
    return torch.tensor(ids)
