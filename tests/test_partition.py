"""Sharding is a pure function: every strategy checked serially for many (n_rows, size)."""

import numpy as np
import pytest

from mpinn.errors import InputError
from mpinn.data.partition import block_offsets, make_shard
from mpinn.options import ShardSpec, parse_shard

SPECS = ["block", "strided", "weighted:1,2,3", "weighted:0,1,1", "random", "random:3"]


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
    if text.startswith("random") and -(-n_rows // (spec.chunk or 1)) < size:
        with pytest.raises(InputError, match="fewer than the"):
            make_shard(n_rows, 0, size, spec)
        return
    shards = [make_shard(n_rows, r, size, spec) for r in range(size)]
    rows = np.concatenate([s.rows for s in shards])
    assert sorted(rows.tolist()) == list(range(n_rows))
    assert sum(s.count for s in shards) == n_rows
    for s in shards:
        assert (np.diff(s.rows) > 0).all()  # local order is global order
        assert s.count == len(s.rows)
        assert (s.take(np.arange(n_rows)) == s.rows).all()
        if not text.startswith("random"):
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


@pytest.mark.parametrize("text", ["block", "strided", "weighted:3,1,2", "random", "random:2"])
@pytest.mark.parametrize("shares", [None, (0.5, 0.2, 0.3)])
def test_local_positions_map_global_rows(text, shares):
    n, size = 23, 3
    rng = np.random.RandomState(0)
    batch = rng.permutation(n)[:9]
    owned_total = 0
    for r in range(size):
        s = make_shard(n, r, size, text, shares=shares)
        assert (s.global_rows(np.arange(s.count)) == s.rows).all()
        mask, local = s.local_positions(batch)
        assert (s.rows[local] == batch[mask]).all()  # same rows, in batch order
        assert set(batch[mask]) == set(batch) & set(s.rows)
        owned_total += mask.sum()
    assert owned_total == len(batch)


# ---- random shards and dynamic shares -------------------------------------------------------


def test_random_is_seeded_chunks_balanced_to_one_chunk():
    n, size, chunk = 1000, 3, 7
    shards = [make_shard(n, r, size, f"random:{chunk}", seed=5) for r in range(size)]
    assert [s.runs for s in shards] == [make_shard(n, r, size, f"random:{chunk}", seed=5).runs for r in range(size)]
    assert [s.runs for s in shards] != [make_shard(n, r, size, f"random:{chunk}", seed=6).runs for r in range(size)]
    counts = [s.count for s in shards]
    assert max(counts) - min(counts) <= chunk
    for s in shards:  # every run starts on a chunk boundary and is made of whole chunks
        assert all(a % chunk == 0 and (b % chunk == 0 or b == n) for a, b in s.runs)
        assert len(s.pieces()) == len(s.runs) > 1  # one hyperslab per run of chunks
        assert all(src.step == 1 for src, _ in s.pieces())
    # the default chunk gives every rank about RANDOM_CHUNKS_PER_RANK chunks
    assert all(8 <= len(make_shard(10_000, r, 4, "random").runs) <= 16 for r in range(4))


@pytest.mark.parametrize("text", ["block", "strided", "weighted:1,1,1,1", "random", "random:5"])
@pytest.mark.parametrize("n_rows", [50, 997, 10_000])
def test_shares_set_the_row_counts(text, n_rows):
    size, shares = 4, (0.55, 0.05, 0.15, 0.25)
    shards = [make_shard(n_rows, r, size, text, seed=1, shares=shares) for r in range(size)]
    rows = np.concatenate([s.rows for s in shards])
    assert sorted(rows.tolist()) == list(range(n_rows))
    # within one row (block), one row per round of the strided pattern, one chunk plus the short
    # last chunk (random)
    chunk = 5 if text == "random:5" else max(1, n_rows // 64)
    rounds = -(-n_rows // (4 * int(np.clip(n_rows // 16, 1, 64))))
    tolerance = {"random": 2 * chunk, "strided": rounds + 1}.get(text.split(":")[0], 1)
    for s, share in zip(shards, shares):
        assert abs(s.count - share * n_rows) <= tolerance, (s.count, share * n_rows)
        assert (np.diff(s.rows) > 0).all()


def test_strided_with_shares_is_block_cyclic_and_reads_strided_hyperslabs():
    n, size = 1000, 2
    s = make_shard(n, 1, size, "strided", shares=(0.75, 0.25))
    period = s.period
    assert period == 2 * 64 and s.runs == ((96, 128),)
    assert all(src.step == period for src, _ in s.pieces())
    assert s.rows[:3].tolist() == [96, 97, 98] and s.rows[32] == 96 + period


@pytest.mark.parametrize("bad", ["random:0", "random:x", "random:-4", "random:1.5", "randoms"])
def test_bad_random_chunk_sizes(bad):
    with pytest.raises(InputError, match="--shard"):
        parse_shard(bad)


def test_random_chunk_too_big_for_the_ranks():
    with pytest.raises(InputError, match=r"--shard random:100: 150 rows make 2 chunk\(s\) of 100 rows, fewer than "
                                         r"the 3 ranks; use a chunk of at most 50 rows"):
        make_shard(150, 0, 3, "random:100")
