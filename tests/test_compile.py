"""`_can_compile_fullgraph = True` holds: the forward traces as one graph (no data-dependent branch, no host sync)."""

import pytest
import torch
from transformers import DynamicCache


@pytest.fixture(scope="module")
def compiled_forward(model):
    # `backend="eager"` runs TorchDynamo's full-graph capture (what `fullgraph=True` promises) without inductor's
    # code generation, which would only add minutes of C++ compilation on a CPU runner.
    torch._dynamo.reset()
    yield torch.compile(model.forward, fullgraph=True, backend="eager")
    torch._dynamo.reset()


def _prefilled_cache(model, golden):
    cache = DynamicCache(config=model.config.text_config)
    inputs = {"input_ids": golden["und.input_ids"], "pixel_values": golden["und.pixel_values"][:, 0]}
    logits = model(**inputs, cache=cache, use_cache=True).logits
    return cache, logits


@torch.no_grad()
def test_understanding_forward_compiles_as_one_graph(model, golden, compiled_forward):
    inputs = {"input_ids": golden["und.input_ids"], "pixel_values": golden["und.pixel_values"][:, 0]}
    logits = compiled_forward(**inputs, use_cache=False).logits
    torch.testing.assert_close(logits, golden["und.logits"], atol=1e-5, rtol=0)


@torch.no_grad()
def test_decode_steps_compile_as_one_graph(model, golden, compiled_forward):
    eager_cache, prefill_logits = _prefilled_cache(model, golden)
    next_token = prefill_logits[:, -1:].argmax(-1)
    expected = model(input_ids=next_token, cache=eager_cache, use_cache=True).logits
    compiled_cache, _ = _prefilled_cache(model, golden)
    logits = compiled_forward(input_ids=next_token, cache=compiled_cache, use_cache=True).logits
    torch.testing.assert_close(logits, expected, atol=0, rtol=0)

    # An image-generation step feeds the image-token embeddings instead of ids.
    embeds = model.get_image_token_embeddings(torch.tensor([[3]]))
    expected = model(inputs_embeds=embeds, cache=eager_cache, use_cache=True).logits
    logits = compiled_forward(inputs_embeds=embeds, cache=compiled_cache, use_cache=True).logits
    torch.testing.assert_close(logits, expected, atol=0, rtol=0)
