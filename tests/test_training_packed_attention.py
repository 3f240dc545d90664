"""Per-sample attention over packed rows (`training.packed_attention`) equals the masked attention and the samples run
apart, forward and backward."""

import copy

import pytest
import torch

from transformers_janus.training.packed_attention import PACKED_SDPA, register_packed_sdpa, sample_boundaries


def _packed_batch(lengths_per_row: list[list[int]], vocab: int = 400, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    length = sum(lengths_per_row[0])
    input_ids = torch.randint(0, vocab, (len(lengths_per_row), length), generator=generator)
    position_ids = torch.zeros_like(input_ids)
    for row, lengths in enumerate(lengths_per_row):
        assert sum(lengths) == length
        start = 0
        for sample_length in lengths:
            position_ids[row, start : start + sample_length] = torch.arange(sample_length)
            start += sample_length
    return input_ids, position_ids


def test_sample_boundaries_read_rows_one_after_another():
    _, position_ids = _packed_batch([[3, 4, 1], [5, 3]])
    bounds = sample_boundaries(position_ids)
    assert bounds["cu_seq_lens_q"].tolist() == [0, 3, 7, 8, 13, 16]
    assert bounds["max_length_q"] == 5 and torch.equal(bounds["cu_seq_lens_k"], bounds["cu_seq_lens_q"])


def test_per_sample_attention_equals_masked_attention_and_separate_samples(model):
    """Logits and gradients: per-sample SDPA = transformers' block-diagonal masked SDPA = each sample alone."""
    register_packed_sdpa()
    input_ids, position_ids = _packed_batch([[7, 12, 1], [5, 9, 6]])
    labels = input_ids.clone()
    masked_model = copy.deepcopy(model).train()
    packed_model = copy.deepcopy(model).train()
    packed_model.set_attn_implementation({"text_config": PACKED_SDPA})
    assert packed_model.model.language_model.config._attn_implementation == PACKED_SDPA

    masked = masked_model(input_ids=input_ids, position_ids=position_ids, labels=labels)
    packed = packed_model(input_ids=input_ids, position_ids=position_ids, labels=labels, **sample_boundaries(position_ids))
    torch.testing.assert_close(packed.logits, masked.logits, atol=2e-6, rtol=0)  # measured 6e-7
    masked.loss.backward()
    packed.loss.backward()
    for (name, a), (_, b) in zip(masked_model.named_parameters(), packed_model.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=0, msg=name)

    with torch.no_grad():  # the second sample of row 0, alone
        alone = model(input_ids=input_ids[:1, 7:19]).logits
    torch.testing.assert_close(packed.logits[:1, 7:19], alone, atol=2e-6, rtol=0)


def test_without_boundaries_it_is_sdpa(model):
    register_packed_sdpa()
    packed_model = copy.deepcopy(model)
    packed_model.set_attn_implementation({"text_config": PACKED_SDPA})
    input_ids, position_ids = _packed_batch([[7, 12, 1]])
    with torch.no_grad():
        expected = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        assert torch.equal(packed_model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits, expected)
        mask = torch.ones_like(input_ids)
        mask[0, :3] = 0
        assert torch.equal(packed_model(input_ids=input_ids, attention_mask=mask).logits, model(input_ids=input_ids, attention_mask=mask).logits)


def test_bad_boundaries_are_refused(model):
    register_packed_sdpa()
    packed_model = copy.deepcopy(model)
    packed_model.set_attn_implementation({"text_config": PACKED_SDPA})
    input_ids, position_ids = _packed_batch([[7, 12, 1]])
    bounds = sample_boundaries(position_ids)
    bounds["cu_seq_lens_q"] = bounds["cu_seq_lens_k"] = torch.tensor([0, 7, 19], dtype=torch.int32)
    with pytest.raises(ValueError, match="must run from 0 to the batch's 20 tokens"):
        packed_model(input_ids=input_ids, position_ids=position_ids, use_cache=False, **bounds)
