"""Numerical parity with DeepSeek's reference code, as recorded in the golden fixture (fp32, CPU)."""

import torch

# ~10x the error measured against the golden fixture (fp32, CPU; table in tests/fixtures/README.md): features and
# logits up to 9.5e-7, decoded pixels up to 1.8e-5, quantised latents (codebook look-ups) 1.5e-8.
FEATURE_ATOL = 1e-5
PIXEL_ATOL = 2e-4
LATENT_ATOL = 2e-7


def understanding_inputs(golden):
    return {
        "input_ids": golden["und.input_ids"],
        "attention_mask": golden["und.attention_mask"],
        "pixel_values": golden["und.pixel_values"][:, 0],
    }


@torch.no_grad()
def test_understanding_path_matches_reference(model, golden):
    inputs = understanding_inputs(golden)
    image_outputs = model.get_image_features(inputs["pixel_values"])
    torch.testing.assert_close(image_outputs.last_hidden_state, golden["und.vision_features"], atol=FEATURE_ATOL, rtol=0)
    torch.testing.assert_close(image_outputs.pooler_output, golden["und.aligned_features"], atol=FEATURE_ATOL, rtol=0)

    outputs = model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(outputs.hidden_states[0], golden["und.inputs_embeds"], atol=FEATURE_ATOL, rtol=0)
    torch.testing.assert_close(outputs.logits, golden["und.logits"], atol=FEATURE_ATOL, rtol=0)


@torch.no_grad()
def test_greedy_answer_matches_reference(model, golden):
    inputs = understanding_inputs(golden)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    assert new_tokens.tolist() == golden["und.greedy_new_tokens"].tolist()


@torch.no_grad()
def test_first_guided_image_step_matches_reference(model, golden, golden_meta):
    rows = golden["gen.cfg_input_ids"]
    hidden = model.model(input_ids=rows).last_hidden_state[:, -1]
    logits = model.get_image_logits(hidden)
    conditional, unconditional = logits[0::2], logits[1::2]
    guided = unconditional + golden_meta["cfg_weight"] * (conditional - unconditional)
    torch.testing.assert_close(guided[0], golden["gen.cfg_logits_sample0"][0], atol=FEATURE_ATOL, rtol=0)
    torch.testing.assert_close(guided[0], golden["gen.step0_cfg_logits"], atol=FEATURE_ATOL, rtol=0)


@torch.no_grad()
def test_image_token_embeddings_feed_the_next_step(model, golden, golden_meta):
    """Step 2 of the reference loop: the first greedy token, embedded by `gen_aligner(gen_embed(.))`."""
    rows = golden["gen.cfg_input_ids"]
    prefill = model.model(input_ids=rows, use_cache=True)
    first = golden["gen.greedy_image_tokens"][:, 0].repeat_interleave(2)
    step = model.model(inputs_embeds=model.get_image_token_embeddings(first)[:, None], cache=prefill.cache)
    logits = model.get_image_logits(step.last_hidden_state[:, -1])
    guided = logits[1::2] + golden_meta["cfg_weight"] * (logits[0::2] - logits[1::2])
    torch.testing.assert_close(guided[0], golden["gen.cfg_logits_sample0"][1], atol=FEATURE_ATOL, rtol=0)
    assert guided.argmax(-1).tolist() == golden["gen.greedy_image_tokens"][:, 1].tolist()


@torch.no_grad()
def test_vq_decode_matches_reference(model, golden):
    decoded = model.decode_image_tokens(golden["gen.greedy_image_tokens"])
    torch.testing.assert_close(decoded, golden["gen.decoded"], atol=PIXEL_ATOL, rtol=0)


@torch.no_grad()
def test_vq_encode_matches_reference(model, golden):
    codes = model.encode_image_tokens(golden["vq.input"])
    assert torch.equal(codes, golden["vq.codes"])
    latents = model.model.get_image_token_latents(codes)
    torch.testing.assert_close(latents, golden["vq.quant"], atol=LATENT_ATOL, rtol=0)
    reconstruction = model.decode_image_tokens(codes)
    torch.testing.assert_close(reconstruction, golden["vq.recon"], atol=PIXEL_ATOL, rtol=0)
