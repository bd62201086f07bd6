"""Sharding is a pure function: every strategy checked serially for many (n_rows, size)."""

import numpy as np
import pytest

from mpinn.errors import InputError
from mpinn.partition import ShardSpec, block_offsets, make_shard, parse_shard

SPECS = ["block", "strided", "weighted:1,2,3", "weighted:0,1,1"]


def _spec_for(text, size):
    if text.startswith("weighted"):
        w = [float(v) for v in text.split(":")[1].split(",")]
        w = (w * size)[:size]
        if not any(w):
            w[0] = 1.0
        return ShardSpec("weighted", tuple(w))
    return parse_shard(text)


@pytest.mark.parametrize("text", SPECS)
@pytest.mark.parametrize("n_rows", [0, 1, 2, 3, 7, 10, 11, 100, 1001])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 16])
def test_shards_cover_every_row_exactly_once(text, n_rows, size):
    spec = _spec_for(text, size)
    shards = [make_shard(n_rows, r, size, spec) for r in range(size)]
    rows = np.concatenate([s.rows for s in shards])
    assert sorted(rows.tolist()) == list(range(n_rows))
    assert sum(s.count for s in shards) == n_rows
    for s in shards:
        assert s.count == len(s.rows) == len(range(n_rows)[s.as_slice()])
        assert (np.arange(n_rows)[s.as_slice()] == s.rows).all()


def test_block_leftovers_go_to_lowest_ranks():
    assert [make_shard(11, r, 3).count for r in range(3)] == [4, 4, 3]
    assert [(s.start, s.stop) for s in (make_shard(11, r, 3) for r in range(3))] == [(0, 4), (4, 8), (8, 11)]
    assert block_offsets(10, 4).tolist() == [0, 3, 6, 8, 10]


def test_more_ranks_than_rows():
    counts = [make_shard(2, r, 5).count for r in range(5)]
    assert counts == [1, 1, 0, 0, 0]
    assert [make_shard(2, r, 5, "strided").count for r in range(5)] == [1, 1, 0, 0, 0]


def test_strided_is_round_robin():
    s = make_shard(10, 1, 3, "strided")
    assert s.rows.tolist() == [1, 4, 7]
    assert s.as_slice() == slice(1, 10, 3)


def test_weighted_shares_and_leftovers():
    spec = parse_shard("weighted:1,1,2")
    assert [make_shard(100, r, 3, spec).count for r in range(3)] == [25, 25, 50]
    # 10 * (1/4, 1/4, 1/2) = 2.5, 2.5, 5 -> floors 2, 2, 5; one leftover to rank 0.
    assert [make_shard(10, r, 3, spec).count for r in range(3)] == [3, 2, 5]
    # a zero weight owns nothing, even of the leftovers
    zero = parse_shard("weighted:0,1,1")
    assert [make_shard(7, r, 3, zero).count for r in range(3)] == [0, 4, 3]


def test_weighted_needs_one_weight_per_rank():
    with pytest.raises(InputError, match="3 weights given for 2 ranks"):
        make_shard(10, 0, 2, "weighted:1,1,2")


@pytest.mark.parametrize("bad", ["blocks", "weighted:", "weighted:1,x", "weighted:-1,2", "weighted:0,0",
                                 "strided:2", "weighted:nan,1"])
def test_bad_specs_are_input_errors(bad):
    with pytest.raises(InputError, match="--shard"):
        parse_shard(bad)


@pytest.mark.parametrize("text", ["block", "strided", "weighted:3,1,2"])
def test_local_positions_map_global_rows(text):
    n, size = 23, 3
    rng = np.random.RandomState(0)
    batch = rng.permutation(n)[:9]
    owned_total = 0
    for r in range(size):
        s = make_shard(n, r, size, text)
        mask, local = s.local_positions(batch)
        assert (s.rows[local] == batch[mask]).all()  # same rows, in batch order
        assert set(batch[mask]) == set(batch) & set(s.rows)
        owned_total += mask.sum()
    assert owned_total == len(batch)
