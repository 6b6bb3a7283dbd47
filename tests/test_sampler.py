"""Token-budget batching: budget respected, every item once, bucketing cuts padding."""

import random

from dapo.data_modules import TokenBudgetBatchSampler, padding_fraction, token_budget_batches


def test_plan_batches_literal_no_shuffle():
    lengths = [4, 2, 3, 1]
    # budget 8 with bucketing, no shuffle: sorted order 3(1), 1(2), 2(3), 0(4)
    # [3, 1, 2] costs 3 x 3 = 9 > 8, so batches are [3, 1] (2 x 2 = 4) then [2, 0] (2 x 4 = 8)
    assert token_budget_batches(lengths, [1] * 4, 8, shuffle=False, bucket=True, seed=0) == [[3, 1], [2, 0]]
    # without bucketing, in order: [0, 1] costs 2 x 4 = 8, then [2, 3] costs 2 x 3 = 6
    assert token_budget_batches(lengths, [1] * 4, 8, shuffle=False, bucket=False, seed=0) == [[0, 1], [2, 3]]


def test_rows_count_towards_budget():
    # actor groups: item 0 has 3 rows of length 2 (cost 6), item 1 has 2 rows of length 2
    assert token_budget_batches([2, 2], [3, 2], 8, shuffle=False, bucket=False, seed=0) == [[0], [1]]
    assert token_budget_batches([2, 2], [3, 2], 10, shuffle=False, bucket=False, seed=0) == [[0, 1]]


def test_item_over_budget_gets_its_own_batch():
    assert token_budget_batches([50, 1, 1], [1, 1, 1], 10, shuffle=False, bucket=False, seed=0) == [[0], [1, 2]]


def test_every_item_once_and_budget_kept():
    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(500)]
    rows = [1] * 500
    batches = token_budget_batches(lengths, rows, 1024, shuffle=True, bucket=True, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(max(lengths[i] for i in b) * len(b) <= 1024 for b in batches)


def test_bucketing_reduces_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(2000)]
    rows = [1] * 2000
    plain = token_budget_batches(lengths, rows, 2048, shuffle=True, bucket=False, seed=0)
    bucketed = token_budget_batches(lengths, rows, 2048, shuffle=True, bucket=True, seed=0)
    assert padding_fraction(bucketed, lengths, rows) < 0.1 < padding_fraction(plain, lengths, rows)


def test_epochs_reshuffle_and_ranks_split():
    lengths = list(range(1, 101))
    sampler = TokenBudgetBatchSampler(lengths, 200, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    rank0 = TokenBudgetBatchSampler(lengths, 200, seed=1, num_replicas=2, rank=0)
    rank1 = TokenBudgetBatchSampler(lengths, 200, seed=1, num_replicas=2, rank=1)
    assert len(rank0) == len(rank1)
    assert not {i for b in rank0 for i in b} & {i for b in rank1 for i in b}


def test_bucketed_batches_do_not_span_windows():
    """Windows [0, 1] and [2, 3]: a batch running on from window 1 (longest item 10) into window 2 would pad
    items 2 and 3 from 1 to 10 tokens; closing the batch at the window's end leaves no padding there."""
    lengths, rows = [1, 10, 1, 1], [1, 1, 1, 1]
    batches = token_budget_batches(lengths, rows, 40, shuffle=False, bucket=True, seed=0, bucket_window=2)
    assert batches == [[0, 1], [2, 3]]
    assert token_budget_batches(lengths, rows, 40, shuffle=False, bucket=False, seed=0) == [[0, 1, 2, 3]]
