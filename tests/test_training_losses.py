"""
The training losses of `JanusProForConditionalGeneration.forward`: the image-generation loss (teacher forcing through
the generation adaptor and the image head) against DeepSeek's decoding loop, and text and image samples sharing one
batch.
"""

import pytest
import torch

from reference import reference_generate


NUM_IMAGE_TOKENS = 16


def _generation_sample(model, prompt_ids: torch.LongTensor, codes: torch.LongTensor):
    """One text-to-image training sample: prompt, image positions (pad id, codes in `image_token_ids`), end token."""
    end_of_image = torch.tensor([model.config.eoi_token_id])
    input_ids = torch.cat([prompt_ids, torch.full_like(codes, model.config.pad_token_id), end_of_image])
    image_token_ids = torch.full_like(input_ids, -100)
    image_token_ids[len(prompt_ids) : len(prompt_ids) + len(codes)] = codes
    return input_ids, image_token_ids


def test_teacher_forced_image_logits_equal_deepseeks_loop_and_golden_tokens(model, golden):
    """Both guidance rows teacher-forced on the golden image: CFG of the image logits = DeepSeek's guided logits."""
    prompt = golden["gen.cfg_input_ids"][:2]  # row 0 conditional, row 1 DeepSeek's pad-filled unconditional
    codes = golden["gen.greedy_image_tokens"][0]
    rows = [_generation_sample(model, prompt_row, codes) for prompt_row in prompt]
    input_ids = torch.stack([row[0] for row in rows])
    image_token_ids = torch.stack([row[1] for row in rows])
    with torch.no_grad():
        out = model(input_ids=input_ids, image_token_ids=image_token_ids, image_labels=image_token_ids)
    cond, uncond = out.image_logits.view(2, NUM_IMAGE_TOKENS, -1)
    guided = uncond + 5.0 * (cond - uncond)
    torch.testing.assert_close(guided, golden["gen.cfg_logits_sample0"], atol=1e-5, rtol=0)  # measured 7.7e-7
    assert torch.equal(guided.argmax(-1), codes)


def test_image_loss_is_the_cross_entropy_of_the_decoding_loops_logits(model, golden):
    """Teacher forcing on greedy tokens: logits = the incremental loop's (KV cache), argmax = the tokens, loss = CE."""
    prompt_ids = golden["gen.prompt_ids"]
    tokens, step_logits = reference_generate(model, prompt_ids, parallel_size=1, cfg_weight=1.0, greedy=True, output_logits=True)
    input_ids, image_token_ids = _generation_sample(model, prompt_ids, tokens[0].long())
    out = model(input_ids=input_ids[None], image_token_ids=image_token_ids[None], image_labels=image_token_ids[None])
    torch.testing.assert_close(out.image_logits, step_logits[0], atol=2e-6, rtol=0)  # measured 1.6e-7
    assert torch.equal(out.image_logits.argmax(-1), tokens[0].long())
    expected = torch.nn.functional.cross_entropy(step_logits[0], tokens[0].long())
    torch.testing.assert_close(out.image_loss, expected, atol=1e-6, rtol=0)
    assert out.text_loss == 0 and torch.equal(out.loss, out.image_loss)


def _text_sample(model, length: int = 12, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 400, (length,), generator=generator)
    input_ids[0] = model.config.text_config.bos_token_id
    labels = input_ids.clone()
    labels[: length // 2] = -100  # the "prompt"
    return input_ids, labels


def test_text_and_image_samples_share_a_batch(model, golden):
    """Right-padded batch of a text and a text-to-image sample: each loss equals its sample run alone."""
    text_ids, text_labels = _text_sample(model)
    gen_ids, gen_codes = _generation_sample(model, golden["gen.prompt_ids"], golden["gen.greedy_image_tokens"][1])
    length = max(len(text_ids), len(gen_ids))

    def pad(tensor, value):
        return torch.cat([tensor, torch.full((length - len(tensor),), value, dtype=tensor.dtype)])

    pad_id = model.config.pad_token_id
    batch = dict(
        input_ids=torch.stack([pad(text_ids, pad_id), pad(gen_ids, pad_id)]),
        attention_mask=torch.stack([pad(torch.ones_like(text_ids), 0), pad(torch.ones_like(gen_ids), 0)]),
        labels=torch.stack([pad(text_labels, -100), torch.full((length,), -100)]),
        image_token_ids=torch.stack([torch.full((length,), -100), pad(gen_codes, -100)]),
    )
    batch["image_labels"] = batch["image_token_ids"]
    with torch.no_grad():
        together = model(**batch)
        text_alone = model(input_ids=text_ids[None], labels=text_labels[None])
        image_alone = model(input_ids=gen_ids[None], image_token_ids=gen_codes[None], image_labels=gen_codes[None])
    torch.testing.assert_close(together.text_loss, text_alone.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(together.image_loss, image_alone.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(together.loss, text_alone.loss + image_alone.loss, atol=1e-6, rtol=0)
    assert text_alone.image_loss == 0 and image_alone.text_loss == 0


def test_step_counts_normalise_each_loss(model, golden):
    """`num_items_in_batch` / `num_image_items_in_batch` turn each part into a sum over the whole step / its count."""
    text_ids, text_labels = _text_sample(model)
    out = model(input_ids=text_ids[None], labels=text_labels[None])
    num_targets = int((text_labels[1:] != -100).sum())
    scaled = model(input_ids=text_ids[None], labels=text_labels[None], num_items_in_batch=4 * num_targets)
    torch.testing.assert_close(scaled.text_loss, out.text_loss / 4, atol=1e-7, rtol=0)

    gen_ids, codes = _generation_sample(model, golden["gen.prompt_ids"], golden["gen.greedy_image_tokens"][0])
    out = model(input_ids=gen_ids[None], image_token_ids=codes[None], image_labels=codes[None])
    scaled = model(
        input_ids=gen_ids[None], image_token_ids=codes[None], image_labels=codes[None], num_image_items_in_batch=32
    )
    torch.testing.assert_close(scaled.image_loss, out.image_loss * NUM_IMAGE_TOKENS / 32, atol=1e-7, rtol=0)


def test_no_targets_gives_zero_loss_and_zero_gradients_everywhere_trained(model):
    """All labels -100: loss 0 (not nan), and every trainable part still gets a (zero) gradient, as DDP needs."""
    text_ids, _ = _text_sample(model)
    model.train()
    try:
        model.zero_grad()
        out = model(
            input_ids=text_ids[None],
            labels=torch.full((1, len(text_ids)), -100),
            image_token_ids=torch.full((1, len(text_ids)), -100),
            image_labels=torch.full((1, len(text_ids)), -100),
        )
        assert out.loss.item() == 0.0 and out.text_loss.item() == 0.0 and out.image_loss.item() == 0.0
        out.loss.backward()
        for name in ("lm_head", "model.gen_head", "model.gen_aligner", "model.gen_embed", "model.language_model"):
            grads = [p.grad for n, p in model.named_parameters() if n.startswith(name + ".")]
            assert grads and all(g is not None and not g.any() for g in grads), name
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_image_loss_gradients_reach_the_generation_path_only(model, golden):
    """The image loss trains the generation adaptor, image head and LLM; never SigLIP, its adaptor or `lm_head`."""
    gen_ids, codes = _generation_sample(model, golden["gen.prompt_ids"], golden["gen.greedy_image_tokens"][0])
    model.zero_grad(set_to_none=True)
    try:
        model(input_ids=gen_ids[None], image_token_ids=codes[None], image_labels=codes[None]).loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        for prefix in ("model.gen_head.", "model.gen_aligner.", "model.gen_embed.", "model.language_model.layers."):
            assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)), prefix
        for prefix in ("model.vision_model.", "model.aligner.", "lm_head.", "model.vq_model."):
            assert all(g is None or not g.any() for n, g in grads.items() if n.startswith(prefix)), prefix
    finally:
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("image_token_ids", torch.full((1, 5), -100), "`image_token_ids` must have the shape"),
        ("image_labels", torch.full((1, 5), -100), "`image_labels` must have the shape"),
        ("image_labels", None, "Out-of-range image labels"),
    ],
)
def test_bad_generation_targets_are_refused_by_name(model, golden, name, value, message):
    gen_ids, codes = _generation_sample(model, golden["gen.prompt_ids"], golden["gen.greedy_image_tokens"][0])
    kwargs = dict(image_token_ids=codes[None], image_labels=codes[None])
    if value is None:
        value = codes[None].clone()
        value[0, -2] = model.config.vq_config.num_vq_embeddings
    kwargs[name] = value
    with pytest.raises(ValueError, match=message):
        model(input_ids=gen_ids[None], **kwargs)


def test_packed_row_keeps_samples_apart(model, golden):
    """A text and a text-to-image sample packed in one row (restarting `position_ids`, no mask) = each run alone."""
    text_ids, text_labels = _text_sample(model)
    gen_ids, codes = _generation_sample(model, golden["gen.prompt_ids"], golden["gen.greedy_image_tokens"][0])
    no_target = torch.full_like(text_ids, -100)
    packed = dict(
        input_ids=torch.cat([text_ids, gen_ids])[None],
        position_ids=torch.cat([torch.arange(len(text_ids)), torch.arange(len(gen_ids))])[None],
        labels=torch.cat([text_labels, torch.full_like(gen_ids, -100)])[None],
        image_token_ids=torch.cat([no_target, codes])[None],
    )
    packed["image_labels"] = packed["image_token_ids"]
    with torch.no_grad():
        together = model(**packed)
        text_alone = model(input_ids=text_ids[None], labels=text_labels[None])
        image_alone = model(input_ids=gen_ids[None], image_token_ids=codes[None], image_labels=codes[None])
    torch.testing.assert_close(together.logits[0, : len(text_ids)], text_alone.logits[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(together.image_logits, image_alone.image_logits, atol=2e-6, rtol=0)  # 1.3e-7; 0.2 if cached
    torch.testing.assert_close(together.text_loss, text_alone.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(together.image_loss, image_alone.loss, atol=1e-6, rtol=0)
