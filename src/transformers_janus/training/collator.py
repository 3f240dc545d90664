"""
Batches of encoded samples (see `training.data.JanusProSampleEncoder`) in the training batch contract (issue 10).

Public API (names are stable; `training/train.py` builds on them):

- `JanusProDataCollator(pad_token_id, max_length=None, packing=False, pad_to_multiple_of=None)`: called on a list of
  encoded samples, returns the model inputs `input_ids`, `labels`, `image_token_ids`, `image_labels`,
  `attention_mask` (unpacked) or `position_ids` (packed), `pixel_values` (when a sample has images), and `meta`, a
  dict the loop pops before the forward: `record_ids`, `kinds` and `spans` (`(row, start, length)`) of the samples
  in row-major order, `num_tokens`,
  `num_real_tokens`, `packing_efficiency`, `num_text_targets`, `num_image_targets`.
- `pack_lengths(lengths, max_length) -> list[list[int]]`: which samples share a row.
- `packing_efficiency(lengths, max_length, batch_size) -> dict`: real / padded tokens of packed and right-padded
  micro-batches over a list of sample lengths; `realistic_length_mix(num_samples, ...)` draws such lengths.

Packed rows hold several samples up to `max_length` tokens; `position_ids` restart at 0 for each sample and for the
tail padding, and there is no attention mask, so transformers builds a block-diagonal causal mask from the positions
(samples never attend to each other; the model must run with `use_cache=False`, which it sets itself when given
labels). Every sample starts with BOS, whose targets are -100, so the model's shift never scores a token of one
sample against the next sample. Images (`pixel_values`) are concatenated in the row-major order of their placeholder
runs, as the model fills them.
"""

import numpy as np
import torch

from .data import IGNORE_INDEX


MODEL_INPUT_KEYS = ("input_ids", "labels", "image_token_ids", "image_labels")


def _first_fit_decreasing(lengths: list[int], order: list[int], capacity: int) -> list[list[int]]:
    rows, loads = [], []
    for index in order:
        for row, load in enumerate(loads):
            if load + lengths[index] <= capacity:
                rows[row].append(index)
                loads[row] += lengths[index]
                break
        else:
            rows.append([index])
            loads.append(lengths[index])
    return rows


def _padded(rows: list[list[int]], lengths: list[int]) -> int:
    return len(rows) * max(sum(lengths[index] for index in row) for row in rows)


def pack_lengths(lengths: list[int], max_length: int) -> list[list[int]]:
    """
    Group sample indices into rows of at most `max_length` tokens, so that the collated tensor (rows x longest row)
    is as small as this finds: first-fit decreasing at `max_length` gives a row count R; for R and R + 1 rows, the
    smallest row capacity at which first-fit decreasing still needs no more rows is searched (bisection), which
    evens out the rows so the last one is not left short. Rows hold their samples in input order and are ordered by
    their first sample; the result depends only on `lengths`.
    """
    too_long = [(index, length) for index, length in enumerate(lengths) if length > max_length]
    if too_long:
        raise ValueError(
            f"Samples longer than max_length={max_length} cannot be packed: (index, length) {too_long[:5]}; raise "
            "`max_length` or drop them (`on_bad_sample='skip'` does so up front)."
        )
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    best = _first_fit_decreasing(lengths, order, max_length)
    total = sum(lengths)
    for num_rows in (len(best), len(best) + 1):
        low, high = max(max(lengths), -(-total // num_rows)), max_length
        while low < high:
            capacity = (low + high) // 2
            if len(_first_fit_decreasing(lengths, order, capacity)) <= num_rows:
                high = capacity
            else:
                low = capacity + 1
        candidate = _first_fit_decreasing(lengths, order, low)
        if _padded(candidate, lengths) < _padded(best, lengths):
            best = candidate
    return sorted((sorted(row) for row in best), key=lambda row: row[0])


def _round_up(length: int, multiple: int | None) -> int:
    return length if not multiple else -(-length // multiple) * multiple


class JanusProDataCollator:
    """
    Collate encoded samples into one batch of the training contract, right-padded with an attention mask or packed.

    Args:
        pad_token_id (`int`): Pad token of `input_ids` (the processor's `pad_token_id`).
        max_length (`int`, *optional*): Row length limit; required for packing. Unpacked, a longer sample is refused.
        packing (`bool`, *optional*, defaults to `False`): Pack several samples per row (see the module docstring).
        pad_to_multiple_of (`int`, *optional*): Round the row length up to a multiple of this.
    """

    def __init__(
        self,
        pad_token_id: int,
        max_length: int | None = None,
        packing: bool = False,
        pad_to_multiple_of: int | None = None,
    ):
        if packing and max_length is None:
            raise ValueError("`packing=True` needs `max_length` (the length of a packed row); pass `max_length=...`.")
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self.packing = packing
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, samples: list[dict]) -> dict:
        if not samples:
            raise ValueError("Cannot collate an empty list of samples.")
        lengths = [len(sample["input_ids"]) for sample in samples]
        if self.max_length is not None and max(lengths) > self.max_length:
            too_long = [(s["record_id"], n) for s, n in zip(samples, lengths) if n > self.max_length]
            raise ValueError(
                f"Samples longer than max_length={self.max_length}: (record_id, length) {too_long[:5]}; check the "
                "data up front with `check_samples`, which finds them."
            )
        rows = pack_lengths(lengths, self.max_length) if self.packing else [[index] for index in range(len(samples))]
        row_length = _round_up(max(sum(lengths[index] for index in row) for row in rows), self.pad_to_multiple_of)

        fill = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX, "image_token_ids": IGNORE_INDEX}
        fill["image_labels"] = IGNORE_INDEX
        batch = {key: torch.full((len(rows), row_length), value, dtype=torch.long) for key, value in fill.items()}
        position_ids = torch.zeros(len(rows), row_length, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), row_length, dtype=torch.long)
        pixel_values, record_ids, kinds, spans = [], [], [], []
        for row, indices in enumerate(rows):
            start = 0
            for index in indices:
                sample, length = samples[index], lengths[index]
                for key in MODEL_INPUT_KEYS:
                    batch[key][row, start : start + length] = sample[key]
                position_ids[row, start : start + length] = torch.arange(length)
                attention_mask[row, start : start + length] = 1
                if sample.get("pixel_values") is not None and len(sample["pixel_values"]):
                    pixel_values.append(sample["pixel_values"])
                record_ids.append(sample.get("record_id"))
                kinds.append(sample.get("kind"))
                spans.append((row, start, length))
                start += length
            position_ids[row, start:] = torch.arange(row_length - start)  # tail padding: its own "sample"

        if self.packing:
            batch["position_ids"] = position_ids
        else:
            batch["attention_mask"] = attention_mask
        if pixel_values:
            batch["pixel_values"] = torch.cat(pixel_values)
        num_real_tokens = sum(lengths)
        batch["meta"] = {
            "record_ids": record_ids,
            "kinds": kinds,
            "spans": spans,
            "num_tokens": len(rows) * row_length,
            "num_real_tokens": num_real_tokens,
            "packing_efficiency": num_real_tokens / (len(rows) * row_length),
            # Targets the model scores after its shift (position 0 of a row is never a target).
            "num_text_targets": int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()),
            "num_image_targets": int((batch["image_labels"][:, 1:] != IGNORE_INDEX).sum()),
        }
        return batch


def padded_tokens(lengths: list[int], max_length: int, packing: bool) -> int:
    """Tokens of the collated tensor of one micro-batch with these sample lengths (rows x row length)."""
    if not packing:
        return len(lengths) * max(lengths)
    return _padded(pack_lengths(lengths, max_length), lengths)


def packing_efficiency(lengths: list[int], max_length: int, batch_size: int) -> dict[str, float]:
    """
    Real tokens / collated tokens when `lengths` are cut into consecutive micro-batches of `batch_size` samples,
    packed into rows of `max_length` (`"packed"`) and right-padded to the longest sample (`"unpacked"`).
    """
    batches = [lengths[start : start + batch_size] for start in range(0, len(lengths), batch_size)]
    real = sum(lengths)
    return {
        "packed": real / sum(padded_tokens(batch, max_length, packing=True) for batch in batches),
        "unpacked": real / sum(padded_tokens(batch, max_length, packing=False) for batch in batches),
    }


def realistic_length_mix(
    num_samples: int,
    seed: int = 0,
    ratio: tuple[int, int, int] = (5, 1, 4),
    num_image_tokens: int = 576,
) -> tuple[list[int], list[str]]:
    """
    Sample lengths like Janus-Pro's stage III mix at full size (576 tokens per image), kinds drawn at `ratio`
    (understanding : text : generation): understanding 600-1000 tokens (image span plus a chat of 22-422 tokens),
    text 50-400, generation 576 codes + a 20-80-token prompt + `<end_of_image>`.
    """
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["understanding", "text", "generation"], size=num_samples, p=np.asarray(ratio) / sum(ratio))
    lengths = []
    for kind in kinds:
        if kind == "understanding":
            lengths.append(int(rng.integers(600, 1001)))
        elif kind == "text":
            lengths.append(int(rng.integers(50, 401)))
        else:
            lengths.append(num_image_tokens + 1 + int(rng.integers(20, 81)))
    return lengths, [str(kind) for kind in kinds]


__all__ = ["JanusProDataCollator", "pack_lengths", "packing_efficiency", "padded_tokens", "realistic_length_mix"]
