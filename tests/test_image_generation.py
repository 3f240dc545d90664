"""Classifier-free-guided image-token decoding (`generate_images`) against the reference loop recorded in the fixture."""

import pytest
import torch

from transformers_janus.image_generation import filter_logits
from transformers_janus.utils import unconditional_input_ids


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
    torch.testing.assert_close(output.logits[0], golden["gen.cfg_logits_sample0"], atol=1e-4, rtol=0)
    decoded = model.decode_image_tokens(output.image_tokens)
    torch.testing.assert_close(decoded, golden["gen.decoded"], atol=1e-3, rtol=0)


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


def test_left_padded_prompts_of_different_lengths_match_single_runs(model, left_padded_image_prompts):
    batch, mask, prompts = left_padded_image_prompts
    together = model.generate_images(batch, attention_mask=mask, top_k=1, output_logits=True)
    for row, prompt in enumerate(prompts):
        alone = model.generate_images(prompt[None], top_k=1, output_logits=True)
        assert together.image_tokens[row].tolist() == alone.image_tokens[0].tolist()
        torch.testing.assert_close(together.logits[row], alone.logits[0], atol=1e-4, rtol=0)


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
    torch.testing.assert_close(unguided.logits[:, 0], model.get_image_logits(hidden), atol=1e-5, rtol=0)


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
    torch.testing.assert_close(with_negative.logits[:, 0], expected, atol=1e-4, rtol=0)


def test_filtering_keeps_top_k_and_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2, top_p=None)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_k=None, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_k=None, top_p=0.1)).tolist() == [[True, False, False, False]]


def test_wrong_generator_count_is_refused(model, prompt_rows):
    with pytest.raises(ValueError, match="Got 3 generators for 2 prompt rows"):
        model.generate_images(prompt_rows, generator=[torch.Generator() for _ in range(3)])
