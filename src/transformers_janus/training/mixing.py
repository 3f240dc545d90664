"""
Deterministic ratio mixing of the three data kinds: which records every optimizer step trains on.

Public API (names are stable; `training/train.py` builds on them):

- `parse_mix_ratio(ratio) -> dict[str, int]`: `"5:1:4"` (understanding:text:generation), a 3-sequence or a dict.
- `kind_counts(ratio, global_batch_size) -> dict[str, int]`: samples of each kind per step (largest remainder).
- `MixedItem(kind, index, position)`: one sample of a step: its kind, its index in that kind's dataset, its
  position in the step's global batch (use it, with the seed and step, to seed the sample's own randomness:
  `training.data.sample_generator(seed, step, position)`).
- `RatioMixer(dataset_sizes, ratio, global_batch_size, seed=0)`: `global_batch(step)`, `micro_batch(step, rank,
  world_size, accumulation_index, accumulation_steps)`, `epochs(step)`, `state_dict()` / `load_state_dict()`.

Everything is a pure function of (seed, step): each kind walks through its own data in a permutation drawn per epoch
from (seed, kind, epoch), taking its count of samples per step, so resuming needs only the step number. The global
batch of a step is ordered with the kinds interleaved evenly (every micro-batch holds about the ratio) and cut into
`world_size * accumulation_steps` equal chunks; chunk `accumulation_index * world_size + rank` belongs to that rank
and micro-batch. One process with `A * W` accumulation steps therefore sees, micro-batch by micro-batch, exactly the
chunks W processes with A accumulation steps see together.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers.utils import logging

from .data import DATA_KINDS


logger = logging.get_logger(__name__)


def parse_mix_ratio(ratio: str | Sequence[float] | Mapping[str, float]) -> dict[str, float]:
    """The ratio of each kind, from `"5:1:4"` (understanding:text:generation), a sequence of three or a dict."""
    if isinstance(ratio, str):
        parts = ratio.split(":")
        try:
            values = [float(part) for part in parts]
        except ValueError:
            values = []
        if len(values) != len(DATA_KINDS):
            raise ValueError(
                f"`--mix_ratio` must be three numbers understanding:text:generation such as '5:1:4', got {ratio!r}."
            )
        ratio = dict(zip(DATA_KINDS, values))
    elif not isinstance(ratio, Mapping):
        values = list(ratio)
        if len(values) != len(DATA_KINDS):
            raise ValueError(f"`mix_ratio` needs one value per kind {DATA_KINDS}, got {values!r}.")
        ratio = dict(zip(DATA_KINDS, values))
    unknown = sorted(set(ratio) - set(DATA_KINDS))
    if unknown:
        raise ValueError(f"`mix_ratio` names unknown kinds {unknown}; the kinds are {DATA_KINDS}.")
    ratio = {kind: float(ratio.get(kind, 0)) for kind in DATA_KINDS}
    if any(value < 0 for value in ratio.values()) or not sum(ratio.values()) > 0:
        raise ValueError(f"`mix_ratio` values must be >= 0 with a positive sum, got {ratio}.")
    return ratio


def kind_counts(ratio, global_batch_size: int) -> dict[str, int]:
    """
    Samples of each kind in a global batch: `global_batch_size * ratio / sum(ratio)` rounded by largest remainder
    (ties go to the kind listed first), so the counts sum to the batch size.
    """
    if global_batch_size < 1:
        raise ValueError(f"The global batch size must be positive, got {global_batch_size}.")
    ratio = parse_mix_ratio(ratio)
    total = sum(ratio.values())
    quotas = {kind: global_batch_size * value / total for kind, value in ratio.items()}
    counts = {kind: int(quota) for kind, quota in quotas.items()}
    remainder = global_batch_size - sum(counts.values())
    by_fraction = sorted(DATA_KINDS, key=lambda kind: (-(quotas[kind] - counts[kind]), DATA_KINDS.index(kind)))
    for kind in by_fraction[:remainder]:
        counts[kind] += 1
    return counts


@dataclass(frozen=True)
class MixedItem:
    """One sample of a step: its kind, its index in that kind's dataset, its position in the global batch."""

    kind: str
    index: int
    position: int


def _seed_for(*parts) -> int:
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class RatioMixer:
    """
    The records of every optimizer step at a fixed ratio of kinds, as a pure function of (seed, step); see the module
    docstring.

    Args:
        dataset_sizes (`dict[str, int]`): Records per kind (a kind with ratio 0 may be absent).
        ratio: The understanding:text:generation ratio (`"5:1:4"`, a sequence or a dict).
        global_batch_size (`int`): Samples per optimizer step over all processes and micro-batches
            (`per_device_train_batch_size * gradient_accumulation_steps * world_size`).
        seed (`int`, *optional*, defaults to 0): Seed of the per-epoch permutations.
    """

    def __init__(self, dataset_sizes: Mapping[str, int], ratio, global_batch_size: int, seed: int = 0):
        self.ratio = parse_mix_ratio(ratio)
        self.counts = kind_counts(self.ratio, global_batch_size)
        for kind in DATA_KINDS:
            if self.ratio[kind] > 0 and not dataset_sizes.get(kind):
                raise ValueError(
                    f"The mix ratio {self.ratio_string} gives {kind} data a share, but no {kind} data was given (or "
                    f"none is left after dropping bad samples); pass `--{kind}_data`, or set its share to 0 with "
                    "`--mix_ratio`."
                )
        starved = [kind for kind in DATA_KINDS if self.ratio[kind] > 0 and self.counts[kind] == 0]
        if starved:
            logger.warning(
                f"A global batch of {global_batch_size} samples at ratio {self.ratio_string} holds no {starved} "
                f"samples (counts {self.counts}); raise the global batch size to train on them."
            )
        self.dataset_sizes = {kind: int(dataset_sizes.get(kind) or 0) for kind in DATA_KINDS}
        self.global_batch_size = global_batch_size
        self.seed = seed
        # Positions of the kinds in a global batch: kind k's j-th sample at (j + 0.5) / count_k, so they interleave.
        slots = [
            ((j + 0.5) / self.counts[kind], DATA_KINDS.index(kind), kind, j)
            for kind in DATA_KINDS
            for j in range(self.counts[kind])
        ]
        self._layout = [(kind, j) for _, _, kind, j in sorted(slots)]
        self._permutations: dict[tuple[str, int], torch.Tensor] = {}

    @property
    def ratio_string(self) -> str:
        return ":".join(f"{value:g}" for value in self.ratio.values())

    def _permutation(self, kind: str, epoch: int) -> torch.Tensor:
        """The order of `kind`'s records in `epoch`, drawn from (seed, kind, epoch); the last few are kept."""
        key = (kind, epoch)
        if key not in self._permutations:
            if len(self._permutations) >= 8:
                self._permutations.pop(next(iter(self._permutations)))
            generator = torch.Generator().manual_seed(_seed_for(self.seed, kind, epoch))
            self._permutations[key] = torch.randperm(self.dataset_sizes[kind], generator=generator)
        return self._permutations[key]

    def _index(self, kind: str, sample_number: int) -> int:
        epoch, offset = divmod(sample_number, self.dataset_sizes[kind])
        return int(self._permutation(kind, epoch)[offset])

    def global_batch(self, step: int) -> list[MixedItem]:
        """The `global_batch_size` samples of optimizer step `step` (0-based), kinds interleaved."""
        if step < 0:
            raise ValueError(f"`step` must be >= 0, got {step}.")
        return [
            MixedItem(kind, self._index(kind, step * self.counts[kind] + j), position)
            for position, (kind, j) in enumerate(self._layout)
        ]

    def micro_batch(
        self, step: int, rank: int = 0, world_size: int = 1, accumulation_index: int = 0, accumulation_steps: int = 1
    ) -> list[MixedItem]:
        """The share of step `step` that process `rank` trains on in its micro-batch `accumulation_index`."""
        chunks = world_size * accumulation_steps
        if self.global_batch_size % chunks:
            raise ValueError(
                f"The global batch of {self.global_batch_size} samples does not split into world_size={world_size} "
                f"x accumulation_steps={accumulation_steps} equal micro-batches; make it "
                "per_device_train_batch_size * gradient_accumulation_steps * world_size."
            )
        if not (0 <= rank < world_size and 0 <= accumulation_index < accumulation_steps):
            raise ValueError(
                f"Need 0 <= rank < world_size and 0 <= accumulation_index < accumulation_steps, got rank={rank}, "
                f"world_size={world_size}, accumulation_index={accumulation_index}, "
                f"accumulation_steps={accumulation_steps}."
            )
        size = self.global_batch_size // chunks
        chunk = accumulation_index * world_size + rank
        return self.global_batch(step)[chunk * size : (chunk + 1) * size]

    def epochs(self, step: int) -> dict[str, float]:
        """How many passes over each kind's data the steps before `step` made (for logging)."""
        return {
            kind: step * self.counts[kind] / self.dataset_sizes[kind]
            for kind in DATA_KINDS
            if self.dataset_sizes[kind]
        }

    def state_dict(self) -> dict:
        """What the data order depends on (the position itself is the step): checked when resuming."""
        return {
            "seed": self.seed,
            "ratio": self.ratio,
            "global_batch_size": self.global_batch_size,
            "dataset_sizes": self.dataset_sizes,
        }

    def load_state_dict(self, state: dict):
        """Refuse to resume with data or settings that would change the order of samples."""
        mine = self.state_dict()
        changed = {key: (state.get(key), mine[key]) for key in mine if state.get(key) != mine[key]}
        if changed:
            raise ValueError(
                "The checkpoint's data order differs from this run's (saved, now): "
                + ", ".join(f"{key} {saved!r} -> {now!r}" for key, (saved, now) in changed.items())
                + ". Resume with the same data, --mix_ratio, --seed and global batch size."
            )


__all__ = ["MixedItem", "RatioMixer", "kind_counts", "parse_mix_ratio"]
