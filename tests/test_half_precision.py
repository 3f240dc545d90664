"""Golden bounds on the half-precision paths users run (tolerances and their reasons: tests/fixtures/README.md)."""

import pytest
import torch

# dtype -> (max, mean) bound on |logit - golden|, about 2x what was measured on the fixture (bf16: 0.023 / 0.004 for
# guided image logits, 0.016 / 0.003 for understanding logits; fp16: 0.0025 / 0.0005 and 0.0026 / 0.0004).
LOGIT_BOUNDS = {torch.bfloat16: (0.05, 0.01), torch.float16: (0.006, 0.0012)}
# Share of the 32 greedy image tokens that must equal the golden ones. A guided logit can move past the fixture's
# smallest best/second-best gap (0.01) in bfloat16, and one flipped token changes all that follow, so bfloat16 gets a
# floor (measured: 32/32); float16's errors stay below the gap (measured: 32/32, required).
TOKEN_AGREEMENT = {torch.bfloat16: 0.75, torch.float16: 1.0}


@pytest.fixture(scope="module", params=[torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def half_model(request, checkpoint_dir):
    from transformers_janus import JanusProForConditionalGeneration

    return JanusProForConditionalGeneration.from_pretrained(checkpoint_dir, dtype=request.param).eval()


@torch.no_grad()
def test_half_precision_text_to_image_stays_near_the_golden_tokens(half_model, golden):
    max_bound, mean_bound = LOGIT_BOUNDS[half_model.dtype]
    rows = golden["gen.prompt_ids"][None].repeat(2, 1)
    output = half_model.generate_images(rows, top_k=1, output_logits=True)
    error = (output.logits[0].float() - golden["gen.cfg_logits_sample0"])[:1].abs()  # the first step: same inputs
    assert error.max() < max_bound and error.mean() < mean_bound, (error.max(), error.mean())
    agreement = (output.image_tokens == golden["gen.greedy_image_tokens"]).float().mean().item()
    assert agreement >= TOKEN_AGREEMENT[half_model.dtype], agreement


@torch.no_grad()
def test_half_precision_understanding_stays_near_the_golden_answer(half_model, golden):
    max_bound, mean_bound = LOGIT_BOUNDS[half_model.dtype]
    inputs = {"input_ids": golden["und.input_ids"], "pixel_values": golden["und.pixel_values"][:, 0].to(half_model.dtype)}
    error = (half_model(**inputs).logits.float() - golden["und.logits"]).abs()
    assert error.max() < max_bound and error.mean() < mean_bound, (error.max(), error.mean())
    answer = half_model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert answer.tolist() == golden["und.greedy_new_tokens"].tolist()
