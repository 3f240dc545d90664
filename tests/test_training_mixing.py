"""Ratio mixing: exact counts per step, a pure function of (seed, step), disjoint rank shards, clear errors."""

from collections import Counter
from fractions import Fraction

import pytest

from transformers_janus.training.mixing import MixedItem, RatioMixer, kind_counts, parse_mix_ratio


SIZES = {"understanding": 7, "text": 3, "generation": 5}


def largest_remainder(ratio, total):
    """Independent restatement in exact fractions: floors, then +1 for the largest remainders (first kind on ties)."""
    quotas = [Fraction(total * r, sum(ratio)) for r in ratio]
    counts = [int(q) for q in quotas]
    order = sorted(range(3), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return dict(zip(("understanding", "text", "generation"), counts))


@pytest.mark.parametrize("ratio", ["5:1:4", "1:0:3", "2:3:5", "7:3:10"])
@pytest.mark.parametrize("batch_size", [1, 4, 7, 10, 12, 128])
def test_kind_counts_are_the_largest_remainder_rounding(ratio, batch_size):
    numbers = [int(part) for part in ratio.split(":")]
    assert kind_counts(ratio, batch_size) == largest_remainder(numbers, batch_size)


def test_every_step_holds_the_ratio_and_each_kind_cycles_through_its_data():
    mixer = RatioMixer(SIZES, "5:1:4", global_batch_size=10, seed=3)
    seen = {kind: [] for kind in SIZES}
    for step in range(21):
        batch = mixer.global_batch(step)
        assert Counter(item.kind for item in batch) == {"understanding": 5, "text": 1, "generation": 4}
        assert [item.position for item in batch] == list(range(10))
        for item in batch:
            seen[item.kind].append(item.index)
    # Kind k takes count_k samples per step from its own epoch permutations: every epoch is each index once.
    for kind, indices in seen.items():
        size = SIZES[kind]
        for epoch in range(len(indices) // size):
            assert sorted(indices[epoch * size : (epoch + 1) * size]) == list(range(size))
    assert mixer.epochs(21) == {"understanding": 15.0, "text": 7.0, "generation": 16.8}
    # The epochs are shuffled differently (a fixed order would repeat).
    epochs = [tuple(seen["understanding"][e * 7 : (e + 1) * 7]) for e in range(15)]
    assert len(set(epochs)) > 1


def test_kinds_are_interleaved_so_micro_batches_keep_the_ratio():
    mixer = RatioMixer(SIZES, "1:1:2", global_batch_size=8)
    kinds = [item.kind for item in mixer.global_batch(0)]
    for start in range(0, 8, 4):
        assert Counter(kinds[start : start + 4]) == {"understanding": 1, "text": 1, "generation": 2}


def test_a_pure_function_of_seed_and_step():
    first = RatioMixer(SIZES, "5:1:4", global_batch_size=10, seed=11)
    later = [first.global_batch(step) for step in (0, 40, 3)]
    resumed = RatioMixer(SIZES, "5:1:4", global_batch_size=10, seed=11)  # a new process that only knows the step
    assert [resumed.global_batch(step) for step in (3, 40, 0)] == later[::-1]
    other_seed = RatioMixer(SIZES, "5:1:4", global_batch_size=10, seed=12)
    assert [other_seed.global_batch(step) for step in range(5)] != [first.global_batch(step) for step in range(5)]
    resumed.load_state_dict(first.state_dict())  # same settings: accepted
    with pytest.raises(ValueError, match=r"seed 11 -> 12.*Resume with the same data"):
        other_seed.load_state_dict(first.state_dict())


@pytest.mark.parametrize("world_size, accumulation_steps", [(2, 1), (2, 3), (3, 2), (6, 1)])
def test_rank_shards_are_disjoint_and_equal_the_one_process_batch(world_size, accumulation_steps):
    per_device = 2
    global_batch_size = per_device * world_size * accumulation_steps
    mixer = RatioMixer(SIZES, "5:1:4", global_batch_size=global_batch_size, seed=5)
    for step in (0, 1, 9):
        full = mixer.global_batch(step)
        # One process with accumulation A * W: micro-batch a' = a * W + r is what rank r sees in its micro-batch a.
        single = [mixer.micro_batch(step, 0, 1, index, accumulation_steps * world_size) for index in
                  range(accumulation_steps * world_size)]
        shards = {}
        for rank in range(world_size):
            for index in range(accumulation_steps):
                shard = mixer.micro_batch(step, rank, world_size, index, accumulation_steps)
                assert len(shard) == per_device
                assert shard == single[index * world_size + rank]
                shards[rank, index] = shard
        positions = [item.position for shard in shards.values() for item in shard]
        assert sorted(positions) == list(range(global_batch_size))  # disjoint, and together the whole step
        assert sorted((i for s in shards.values() for i in s), key=lambda i: i.position) == full


def test_missing_kind_with_a_share_is_a_clear_error():
    with pytest.raises(ValueError, match=r"gives text data a share, but no text data was given.*`--text_data`"):
        RatioMixer({"understanding": 4, "generation": 4}, "5:1:4", global_batch_size=10)
    with pytest.raises(ValueError, match=r"no generation data.*`--generation_data`"):
        RatioMixer({"understanding": 4, "text": 1, "generation": 0}, "5:1:4", global_batch_size=10)
    # A kind with ratio 0 may be absent, and never appears.
    mixer = RatioMixer({"understanding": 4, "generation": 4}, "1:0:3", global_batch_size=8)
    assert {item.kind for step in range(5) for item in mixer.global_batch(step)} == {"understanding", "generation"}


def test_bad_ratios_and_splits_are_refused():
    assert parse_mix_ratio("5:1:4") == {"understanding": 5.0, "text": 1.0, "generation": 4.0}
    assert parse_mix_ratio({"generation": 1}) == {"understanding": 0.0, "text": 0.0, "generation": 1.0}
    for bad in ("5:1", "a:b:c", "0:0:0", "-1:1:1"):
        with pytest.raises(ValueError, match="mix_ratio"):
            parse_mix_ratio(bad)
    with pytest.raises(ValueError, match="unknown kinds"):
        parse_mix_ratio({"video": 1})
    mixer = RatioMixer(SIZES, "5:1:4", global_batch_size=10)
    with pytest.raises(ValueError, match="does not split into world_size=3"):
        mixer.micro_batch(0, 0, 3, 0, 1)
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        mixer.micro_batch(0, 2, 2, 0, 1)
    assert isinstance(mixer.global_batch(0)[0], MixedItem)
