"""Collating encoded samples: right padding, packing (per-sample losses equal the samples run apart), efficiency."""

import json
import shutil

import pytest
import torch

from transformers_janus import JanusProProcessor
from transformers_janus.training.collator import (
    JanusProDataCollator,
    pack_lengths,
    packing_efficiency,
    padded_tokens,
    realistic_length_mix,
)
from transformers_janus.training.data import IGNORE_INDEX, JanusProSampleEncoder, VQCodeCache, load_samples


# Packed and separate runs differ by float reordering only: measured up to ~1.5e-6 on the fixture (fp32), so the
# bound is the 1e-5.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def processor(checkpoint_dir):
    return JanusProProcessor.from_pretrained(checkpoint_dir)


@pytest.fixture(scope="module")
def samples(processor, model, fixture_dir, tmp_path_factory):
    """Two understanding (one and two images), two text and two generation samples of the fixture, encoded."""
    folder = tmp_path_factory.mktemp("data")
    shutil.copy(fixture_dir / "und_image.png", folder / "und.png")
    shutil.copy(fixture_dir / "vq_image.png", folder / "vq.png")
    two_images = [{"type": "image"}, {"type": "text", "text": "Compare"}, {"type": "image"}]
    records = {
        "understanding": [
            {"messages": [{"role": "user", "content": "<image_placeholder>\nWhat is it?"},
                          {"role": "assistant", "content": "A cat."}], "images": ["und.png"]},
            {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": two_images},
                          {"role": "assistant", "content": "The second is darker."}], "images": ["vq.png", "und.png"]},
        ],
        "text": [
            {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there."}]},
            {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"},
                          {"role": "assistant", "content": "6"}]},
        ],
        "generation": [
            {"caption": "a red cat", "image": "vq.png"},
            {"caption": "a dog in the snow", "image": "und.png"},
        ],
    }
    encoder = JanusProSampleEncoder(
        processor, max_length=512, vq_codes=VQCodeCache(model, processor.image_processor, folder / "cache"),
        cfg_drop_prob=0.0,
    )
    encoded = {}
    for kind, kind_records in records.items():
        path = folder / f"{kind}.jsonl"
        path.write_text("".join(json.dumps(record) + "\n" for record in kind_records))
        encoded[kind] = [encoder.encode(record) for record in load_samples(path, kind)]
    und, text, gen = encoded["understanding"], encoded["text"], encoded["generation"]
    return [und[0], text[0], gen[0], und[1], gen[1], text[1]]


def per_sample_losses(model, batch, spans):
    """
    Mean text and image cross-entropy of each sample, from the hidden states of one forward of `batch` (no model
    loss involved): position t of a sample's span scores `labels` / `image_labels` at t + 1 within the span.
    """
    inputs = {key: batch[key] for key in ("input_ids", "pixel_values", "attention_mask", "position_ids",
                                          "image_token_ids") if key in batch}
    with torch.no_grad():
        hidden = model.model(**inputs, use_cache=False).last_hidden_state
        text_logits, image_logits = model.lm_head(hidden), model.get_image_logits(hidden)
    losses = []
    for row, start, length in spans:
        sample_losses = []
        for logits, labels in ((text_logits, batch["labels"]), (image_logits, batch["image_labels"])):
            targets = labels[row, start + 1 : start + length]
            scored = logits[row, start : start + length - 1]
            keep = targets != IGNORE_INDEX
            total = torch.nn.functional.cross_entropy(scored[keep], targets[keep], reduction="sum")
            sample_losses.append((total, int(keep.sum())))
        losses.append(sample_losses)
    return losses


def spans_of(batch):
    """(row, start, length) of each sample by record id, as the collator reports them."""
    return dict(zip(batch["meta"]["record_ids"], batch["meta"]["spans"]))


def test_packed_row_losses_equal_each_sample_run_alone(model, samples, processor):
    lengths = [len(sample["input_ids"]) for sample in samples]
    max_length = sum(lengths) // 2 + max(lengths)
    collator = JanusProDataCollator(processor.pad_token_id, max_length=max_length, packing=True)
    batch = collator(samples)
    assert "attention_mask" not in batch and batch["input_ids"].shape[1] <= max_length
    assert sorted(batch["meta"]["record_ids"]) == sorted(sample["record_id"] for sample in samples)

    spans = spans_of(batch)
    kinds_per_row = {}
    for sample in samples:
        row, start, length = spans[sample["record_id"]]
        kinds_per_row.setdefault(row, set()).add(sample["kind"])
        # Each sample's tensors sit unchanged in its span, its positions restart at 0.
        for key in ("input_ids", "labels", "image_token_ids", "image_labels"):
            assert torch.equal(batch[key][row, start : start + length], sample[key])
        assert torch.equal(batch["position_ids"][row, start : start + length], torch.arange(length))
    assert any(len(kinds) == 3 for kinds in kinds_per_row.values()), kinds_per_row  # all kinds share a row

    # Images come in the row-major order of their placeholder runs.
    expected_images = [s["pixel_values"] for i in batch["meta"]["record_ids"] for s in samples if s["record_id"] == i
                       and s.get("pixel_values") is not None]
    assert torch.equal(batch["pixel_values"], torch.cat(expected_images))
    assert batch["pixel_values"].shape[0] == 3

    packed = per_sample_losses(model, batch, [spans[sample["record_id"]] for sample in samples])
    worst = 0.0
    for sample, packed_losses in zip(samples, packed):
        alone = {key: sample[key][None] for key in ("input_ids", "labels", "image_token_ids", "image_labels")}
        if sample.get("pixel_values") is not None:
            alone["pixel_values"] = sample["pixel_values"]
        (alone_losses,) = per_sample_losses(model, alone, [(0, 0, len(sample["input_ids"]))])
        for (packed_sum, packed_count), (alone_sum, alone_count) in zip(packed_losses, alone_losses):
            assert packed_count == alone_count
            if packed_count:
                worst = max(worst, abs(packed_sum.item() - alone_sum.item()) / packed_count)
    print(f"packed vs alone, worst per-target loss difference: {worst:.2e}")
    assert worst <= TOLERANCE, worst
    # Every kind was scored: text targets in understanding/text samples, image targets in generation samples.
    assert all(losses[0][1] > 0 for sample, losses in zip(samples, packed) if sample["kind"] != "generation")
    assert all(losses[1][1] > 0 for sample, losses in zip(samples, packed) if sample["kind"] == "generation")

    # The model's own losses on the packed batch are the per-sample sums over the batch's target counts.
    model_inputs = {key: value for key, value in batch.items() if key != "meta"}
    output = model(**model_inputs)
    text_sum = sum(losses[0][0] for losses in packed)
    image_sum = sum(losses[1][0] for losses in packed)
    assert batch["meta"]["num_text_targets"] == sum(losses[0][1] for losses in packed)
    assert batch["meta"]["num_image_targets"] == sum(losses[1][1] for losses in packed)
    torch.testing.assert_close(output.text_loss, text_sum / batch["meta"]["num_text_targets"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(
        output.image_loss, image_sum / batch["meta"]["num_image_targets"], atol=TOLERANCE, rtol=0
    )


def test_unpacked_batch_is_right_padded_with_an_attention_mask(model, samples, processor):
    batch = JanusProDataCollator(processor.pad_token_id)(samples)
    lengths = [len(sample["input_ids"]) for sample in samples]
    assert batch["input_ids"].shape == (len(samples), max(lengths))
    assert "position_ids" not in batch
    assert batch["meta"]["record_ids"] == [sample["record_id"] for sample in samples]
    for row, (sample, length) in enumerate(zip(samples, lengths)):
        assert torch.equal(batch["input_ids"][row, :length], sample["input_ids"])
        assert (batch["input_ids"][row, length:] == processor.pad_token_id).all()
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
        assert (batch["image_labels"][row, length:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (max(lengths) - length)
    assert batch["meta"]["packing_efficiency"] == sum(lengths) / (len(samples) * max(lengths))

    padded = per_sample_losses(model, batch, [(row, 0, length) for row, length in enumerate(lengths)])
    for sample, padded_losses in zip(samples, padded):
        alone = {key: sample[key][None] for key in ("input_ids", "labels", "image_token_ids", "image_labels")}
        if sample.get("pixel_values") is not None:
            alone["pixel_values"] = sample["pixel_values"]
        (alone_losses,) = per_sample_losses(model, alone, [(0, 0, len(sample["input_ids"]))])
        for (padded_sum, count), (alone_sum, _) in zip(padded_losses, alone_losses):
            if count:
                assert abs(padded_sum.item() - alone_sum.item()) / count <= TOLERANCE


def test_packing_refuses_too_long_samples_and_needs_max_length(processor, samples):
    with pytest.raises(ValueError, match="`packing=True` needs `max_length`"):
        JanusProDataCollator(processor.pad_token_id, packing=True)
    short = min(len(sample["input_ids"]) for sample in samples)
    with pytest.raises(ValueError, match=r"longer than max_length=.*record_id"):
        JanusProDataCollator(processor.pad_token_id, max_length=short, packing=True)(samples)


def test_pack_lengths_places_every_sample_once_within_max_length():
    lengths, _ = realistic_length_mix(64, seed=1)
    for max_length in (1024, 2048, 4096):
        rows = pack_lengths(lengths, max_length)
        assert sorted(index for row in rows for index in row) == list(range(len(lengths)))
        assert all(sum(lengths[index] for index in row) <= max_length for row in rows)
        assert pack_lengths(lengths, max_length) == rows  # deterministic
        # No fewer rows than the tokens need, and never worse than one sample per row padded to the longest.
        assert len(rows) >= -(-sum(lengths) // max_length)
        assert padded_tokens(lengths, max_length, packing=True) <= padded_tokens(lengths, max_length, packing=False)
    # Three rows of 5 tokens hold these without any padding, fewer rows of 8 cannot (2 x 8 > 15).
    assert pack_lengths([5, 4, 3, 2, 1], 8) == [[0], [1, 4], [2, 3]]
    assert padded_tokens([5, 4, 3, 2, 1], 8, packing=True) == 15


def test_packing_efficiency_on_a_realistic_mix():
    lengths, kinds = realistic_length_mix(2048, seed=0)
    assert {"understanding", "text", "generation"} == set(kinds)
    efficiency = packing_efficiency(lengths, max_length=4096, batch_size=16)
    # Independent recount for the unpacked baseline: real tokens over rows padded to the batch's longest sample.
    batches = [lengths[i : i + 16] for i in range(0, len(lengths), 16)]
    assert efficiency["unpacked"] == sum(lengths) / sum(len(b) * max(b) for b in batches)
    assert efficiency["packed"] >= 0.9 > efficiency["unpacked"]  # the target, against the baseline
