"""
Speculative Jacobi decoding of image tokens (`generate_images(decoding="jacobi")`): greedy tokens equal to the
sequential path's on the trained shapes model and on the fixture, sampled tokens distributed as the sequential
sampler's (a chi-square test that a plain "keep the draft" rule fails), batches equal to their images alone.
"""

import pytest
import torch

import transformers_janus.jacobi_image_decoding as jacobi_image_decoding
from transformers_janus import DEFAULT_MODEL, JanusProForConditionalGeneration, JanusProImagePipeline, JanusProProcessor
from transformers_janus.image_generation import image_logits_warpers

from test_convert_janus import tiny_janus_pro_config

SHAPES_PROMPTS = [
    "a photo of a purple circle",
    "a photo of two squares",
    "a photo of a red square and a green circle",
    "a photo of a triangle left of a circle",
]


@pytest.fixture(scope="module")
def shapes_model():
    return JanusProForConditionalGeneration.from_pretrained(DEFAULT_MODEL).eval()


@pytest.fixture(scope="module")
def shapes_prompts():
    """Four prompts of different lengths, left-padded into one batch."""
    inputs = JanusProProcessor.from_pretrained(DEFAULT_MODEL).prepare_image_generation_inputs(SHAPES_PROMPTS)
    assert not bool(inputs["attention_mask"].all())
    return inputs["input_ids"], inputs["attention_mask"]


@pytest.mark.parametrize("fast_decoding", [False, True])
def test_greedy_tokens_and_logits_equal_the_sequential_path_on_the_trained_model(
    shapes_model, shapes_prompts, fast_decoding
):
    ids, mask = shapes_prompts
    sequential = shapes_model.generate_images(ids, mask, top_k=1, output_logits=True)
    jacobi = shapes_model.generate_images(
        ids, mask, top_k=1, output_logits=True, decoding="jacobi", fast_decoding=fast_decoding
    )
    assert torch.equal(jacobi.image_tokens, sequential.image_tokens)
    # a pass over 16 positions rounds differently from 16 one-token steps: measured 1.7e-4 on guided logits of ~25
    # (6.7e-6 relative; guidance 5 scales the difference of the two rows)
    torch.testing.assert_close(jacobi.logits, sequential.logits, atol=1e-4, rtol=5e-5)
    num_tokens = shapes_model.config.num_image_tokens
    assert sequential.num_forward_passes == num_tokens
    # the four images keep different numbers of drafts per pass; the batch still needs far fewer passes than tokens
    assert jacobi.num_forward_passes < num_tokens / 2
    assert 0 < jacobi.draft_acceptance_rate < 1


def test_each_image_of_a_batch_advances_alone_greedy_and_sampled(shapes_model, shapes_prompts):
    ids, mask = shapes_prompts
    batch = shapes_model.generate_images(ids, mask, top_k=1, decoding="jacobi", jacobi_window=8)
    passes = []
    for row in range(len(ids)):
        alone = shapes_model.generate_images(
            ids[row : row + 1], mask[row : row + 1], top_k=1, decoding="jacobi", jacobi_window=8
        )
        assert torch.equal(alone.image_tokens[0], batch.image_tokens[row])
        passes.append(alone.num_forward_passes)
    assert len(set(passes)) > 1  # the rows do accept different lengths
    assert batch.num_forward_passes == max(passes)

    def generators():
        return [torch.Generator().manual_seed(seed) for seed in range(len(ids))]

    sampled = shapes_model.generate_images(ids, mask, generator=generators(), decoding="jacobi").image_tokens
    again = shapes_model.generate_images(ids, mask, generator=generators(), decoding="jacobi").image_tokens
    assert torch.equal(sampled, again)
    for row, generator in enumerate(generators()):
        alone = shapes_model.generate_images(
            ids[row : row + 1], mask[row : row + 1], generator=[generator], decoding="jacobi"
        )
        assert torch.equal(alone.image_tokens[0], sampled[row])


def test_greedy_tokens_equal_the_sequential_path_on_the_fixture_with_padding(model, left_padded_image_prompts):
    ids, mask, _ = left_padded_image_prompts
    sequential = model.generate_images(ids, mask, top_k=1).image_tokens
    for window in (2, 5, 64):
        jacobi = model.generate_images(ids, mask, top_k=1, decoding="jacobi", jacobi_window=window)
        assert torch.equal(jacobi.image_tokens, sequential)


# ---------------------------------------------------------------------------------------------------------------
# Sampling: the joint distribution of the first tokens is the sequential sampler's
# ---------------------------------------------------------------------------------------------------------------

CODEBOOK = 4
FIRST_TOKENS = 3


@pytest.fixture(scope="module")
def tiny_vocabulary_model():
    """A random model with 4 image codes whose next-code distributions depend strongly on the previous code."""
    torch.manual_seed(0)
    config = tiny_janus_pro_config(vq_config={"num_vq_embeddings": CODEBOOK})
    model = JanusProForConditionalGeneration(config).eval()
    with torch.no_grad():  # unit-scale weights on the image path: sharp logits that follow the previous code
        for module in (model.model.gen_embed, model.model.gen_aligner, model.model.gen_head):
            for parameter in module.parameters():
                if parameter.ndim > 1:
                    parameter.normal_(0.0, 3.0 / parameter.shape[-1] ** 0.5)
    prompt = torch.tensor([[0, 5, 17, 33, 48, 61, 7, config.boi_token_id]])
    return model, prompt


def exact_joint_distribution(model, prompt, sampling: dict) -> torch.Tensor:
    """P(x0, x1, x2) from the sequential path's guided logits: every prefix forced through `step_callback`."""
    prefixes = torch.cartesian_prod(*[torch.arange(CODEBOOK)] * (FIRST_TOKENS - 1))  # [16, 2]
    rows = prompt.repeat(len(prefixes), 1)

    def force(step, tokens):
        if step < FIRST_TOKENS - 1:
            forced = tokens.clone()
            forced[:, step] = prefixes[:, step]
            return {"image_tokens": forced}
        return {"stop": True}

    logits = model.generate_images(rows, top_k=1, output_logits=True, step_callback=force).logits
    warpers = image_logits_warpers(**sampling)
    probabilities = warpers(None, logits.reshape(-1, CODEBOOK)).softmax(-1).view(len(prefixes), FIRST_TOKENS, CODEBOOK)
    joint = torch.zeros([CODEBOOK] * FIRST_TOKENS, dtype=torch.float64)
    for row, (x0, x1) in enumerate(prefixes.tolist()):
        joint[x0, x1] = probabilities[row, 0, x0] * probabilities[row, 1, x1] * probabilities[row, 2]
    return joint / joint.sum()  # rows share x0's distribution: exact up to rounding


def chi_square_p_value(counts: torch.Tensor, probabilities: torch.Tensor) -> float:
    """Pearson's test of `counts` against `probabilities`, cells expecting fewer than 5 pooled into one."""
    counts, expected = counts.flatten().double(), probabilities.flatten() * counts.sum()
    small = expected < 5
    observed = torch.cat([counts[~small], counts[small].sum()[None]])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    observed, expected = observed[expected > 0], expected[expected > 0]
    statistic = ((observed - expected) ** 2 / expected).sum()
    degrees_of_freedom = len(observed) - 1
    return float(torch.special.gammaincc(torch.tensor(degrees_of_freedom / 2.0), statistic / 2.0))


def sampled_joint_counts(model, prompt, sampling: dict, samples: int, window: int) -> torch.Tensor:
    output = model.generate_images(
        prompt.repeat(samples, 1), generator=torch.Generator().manual_seed(1), decoding="jacobi", jacobi_window=window,
        **sampling,
    )
    first = output.image_tokens[:, :FIRST_TOKENS]
    index = (first * torch.tensor([CODEBOOK**2, CODEBOOK, 1])).sum(1)
    return torch.bincount(index, minlength=CODEBOOK**FIRST_TOKENS).view([CODEBOOK] * FIRST_TOKENS), output


@pytest.mark.parametrize(
    "sampling",
    [{}, {"temperature": 0.7, "top_k": 3}, {"top_p": 0.8}],
    ids=["plain", "temperature-top_k", "top_p"],
)
def test_sampled_tokens_follow_the_sequential_distribution(tiny_vocabulary_model, sampling):
    model, prompt = tiny_vocabulary_model
    exact = exact_joint_distribution(model, prompt, sampling)
    counts, output = sampled_joint_counts(model, prompt, sampling, samples=4000, window=3)
    assert 0.05 < output.draft_acceptance_rate < 0.95  # drafts were both kept and rejected
    assert chi_square_p_value(counts, exact) > 1e-3


def test_the_distribution_test_passes_the_sequential_sampler_and_fails_a_plain_keep_the_draft_rule(
    tiny_vocabulary_model, monkeypatch
):
    model, prompt = tiny_vocabulary_model
    exact = exact_joint_distribution(model, prompt, {})
    sequential = model.generate_images(prompt.repeat(4000, 1), generator=torch.Generator().manual_seed(1))
    index = (sequential.image_tokens[:, :FIRST_TOKENS] * torch.tensor([CODEBOOK**2, CODEBOOK, 1])).sum(1)
    counts = torch.bincount(index, minlength=CODEBOOK**FIRST_TOKENS)
    assert chi_square_p_value(counts, exact) > 1e-3  # measured 0.13; the Jacobi sampler's: 0.31, 0.39, 0.73
    monkeypatch.setattr(jacobi_image_decoding, "accept_drafts", lambda p, q, u: torch.ones_like(p, dtype=torch.bool))
    counts, _ = sampled_joint_counts(model, prompt, {}, samples=4000, window=3)
    assert chi_square_p_value(counts, exact) < 1e-6


# ---------------------------------------------------------------------------------------------------------------
# Callbacks, the pipeline, `generate`, and refused settings
# ---------------------------------------------------------------------------------------------------------------


def test_step_callback_sees_every_step_in_order_and_can_stop(shapes_model, shapes_prompts):
    ids, mask = shapes_prompts
    full = shapes_model.generate_images(ids, mask, top_k=1, decoding="jacobi").image_tokens
    seen = []

    def record(step, tokens):
        seen.append(step)
        assert torch.equal(tokens, full[:, : step + 1])
        return {"image_tokens": tokens.clone(), "stop": step == 40}

    stopped = shapes_model.generate_images(ids, mask, top_k=1, decoding="jacobi", step_callback=record).image_tokens
    assert seen == list(range(41))
    assert torch.equal(stopped, full[:, :41])

    def edit(step, tokens):
        edited = tokens.clone()
        edited[:, -1] = (edited[:, -1] + 1) % shapes_model.config.vq_config.num_vq_embeddings
        return {"image_tokens": edited}

    with pytest.raises(ValueError, match="decoding='sequential'"):
        shapes_model.generate_images(ids, mask, top_k=1, decoding="jacobi", step_callback=edit)


def test_pipeline_and_generate_decode_with_jacobi(shapes_model):
    processor = JanusProProcessor.from_pretrained(DEFAULT_MODEL)
    pipe = JanusProImagePipeline(model=shapes_model, processor=processor)
    pipe.set_progress_bar_config(disable=True)
    steps = []
    kwargs = {"top_k": 1, "output_type": "latent"}
    sequential = pipe("a photo of two squares", **kwargs).images
    jacobi = pipe(
        "a photo of two squares", decoding="jacobi", callback_on_step_end=lambda p, i, t, k: steps.append(i) or {},
        **kwargs,
    ).images
    assert torch.equal(jacobi, sequential)
    assert steps == list(range(shapes_model.config.num_image_tokens))
    ids = processor.prepare_image_generation_inputs(["a photo of two squares"])["input_ids"]
    tokens = shapes_model.generate(ids, generation_mode="image", do_sample=False, decoding="jacobi", jacobi_window=4)
    assert torch.equal(tokens, sequential)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decoding": "parallel"}, "`decoding` must be 'sequential' or 'jacobi'"),
        ({"decoding": "jacobi", "jacobi_window": 1}, "`jacobi_window` must be an integer >= 2"),
        ({"decoding": "jacobi", "cache_implementation": "static"}, "Use the dynamic cache"),
    ],
)
def test_bad_decoding_settings_are_refused(model, golden, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate_images(golden["gen.prompt_ids"][None], **kwargs)
