"""The train/test split and the global batch schedule, for many rank counts simulated in one
process (both are pure functions of the seed, the data size and the shard): the same global
batches, in the same order, on any rank count and shard; exact mid-epoch resume on another
rank count; the keyed permutation's per-rank memory bounded by the rank's share."""

import json
import math
import tracemalloc

import numpy as np
import pytest

from launch import clean_env, run
from mpinn.errors import InputError
from mpinn.data.partition import make_shard
from mpinn.data.permutation import KeyedPermutation
from mpinn.data.schedule import (SKLEARN_MAX_ROWS, BatchSchedule, TrainRows, resolve_permutation, split_indices,
                            split_part, split_rows, train_test_split_indices)

SPECS = ["block", "strided", "weighted", "random:3"]


def _spec(spec, size):
    """``weighted`` with one weight per rank, one of them 0 (a rank with no rows) from 3 ranks."""
    return "weighted:" + ",".join("2101111"[:size]) if spec == "weighted" else spec


def _schedules(n, size, spec, permutation, shuffle="global", batch=8, fraction=0.2, seed=5, rng_seed=9):
    """One schedule per simulated rank, each with its own RandomState of the same seed."""
    out = []
    for rank in range(size):
        shard = make_shard(n, rank, size, _spec(spec, size), seed=seed)
        train, _ = split_rows(n, fraction, seed, shard, permutation)
        out.append(BatchSchedule(train, batch, shuffle, np.random.RandomState(rng_seed), shard,
                                 permutation=permutation, shard_spec=_spec(spec, size)))
    return out


def _epoch(schedules, epoch, start_step=0):
    """Per step, each rank's rows as global row ids (the generators advance in lockstep)."""
    steps = zip(*(s.epoch(epoch, start_step) for s in schedules))
    return [[s.shard.rows[p] for s, p in zip(schedules, parts)] for parts in steps]


def _assert_same_batches(per_rank_steps, reference_steps):
    """Each step: the ranks' rows together are the reference batch, and each rank's rows come
    in the reference's order (its part is a subsequence of the batch)."""
    assert len(per_rank_steps) == len(reference_steps)
    for parts, (want,) in zip(per_rank_steps, reference_steps):
        where = {int(g): i for i, g in enumerate(want)}
        seen = []
        for part in parts:
            places = [where[int(g)] for g in part]
            assert places == sorted(places)
            seen += places
        assert sorted(seen) == list(range(len(want)))


# ---- the keyed permutation ---------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 100, 1023, 70001])
def test_keyed_permutation_is_a_bijection_with_an_inverse(n):
    p = KeyedPermutation(n, [7, 1])
    images = p(np.arange(n))
    assert sorted(images.tolist()) == list(range(n))
    assert p.inverse(images).tolist() == list(range(n))
    assert np.array_equal(KeyedPermutation(n, [7, 1])(np.arange(n)), images)  # a function of the key
    if n >= 100:
        assert not np.array_equal(KeyedPermutation(n, [7, 2])(np.arange(n)), images)
    with pytest.raises(ValueError):
        p(np.array([n]))


def test_keyed_batches_mix_a_sorted_file_like_a_random_shuffle():
    """10 classes stored one after another: each batch of 200 holds about 20 of each, with the
    spread of a uniformly random shuffle (hypergeometric sd 4.2); a block shuffle would not."""
    n, batch = 20000, 200
    label = np.arange(n) * 10 // n
    order = KeyedPermutation(n, 3).inverse(np.arange(n))  # train index at each epoch position
    counts = np.array([np.bincount(label[order[s:s + batch]], minlength=10) for s in range(0, n, batch)])
    assert abs(counts.mean() - 20) < 1e-9
    assert 3.7 < counts.std() < 4.7


# ---- the split -------------------------------------------------------------------------------

def test_auto_is_sklearn_up_to_the_documented_size():
    assert resolve_permutation("auto", SKLEARN_MAX_ROWS) == "sklearn"
    assert resolve_permutation("auto", SKLEARN_MAX_ROWS + 1) == "keyed"
    assert resolve_permutation("sklearn", 10**12) == "sklearn"


@pytest.mark.parametrize("spec", SPECS)
def test_keyed_split_is_the_same_on_any_rank_count(spec):
    n, fraction, seed = 1003, 0.3, 11
    n_test = math.ceil(fraction * n)
    whole, test_whole = split_rows(n, fraction, seed, make_shard(n, 0, 1), "keyed")
    assert whole.n == n - n_test and len(test_whole) == n_test
    assert whole.index.tolist() == list(range(n - n_test))  # train indices number the train rows
    all_train, all_test = split_indices(n, fraction, seed, "keyed")  # what `mpinn eval --rows` redraws
    assert all_train.tolist() == whole.local.tolist() and all_test.tolist() == test_whole.tolist()
    train_of = dict(zip(whole.index.tolist(), whole.local.tolist()))  # one rank: local = global
    for size in (2, 4, 7):
        train, test = {}, []
        for rank in range(size):
            shard = make_shard(n, rank, size, _spec(spec, size), seed=3)
            mine, held = split_rows(n, fraction, seed, shard, "keyed")
            assert mine.n == whole.n
            train.update(zip(mine.index.tolist(), shard.rows[mine.local].tolist()))
            test.append(shard.rows[held])
        assert train == train_of
        # Test rows: the same set, each rank's in the one-rank order.
        test_order = {int(g): i for i, g in enumerate(test_whole)}
        places = [[test_order[int(g)] for g in part] for part in test]
        assert all(p == sorted(p) for p in places) and sorted(sum(places, [])) == list(range(n_test))


@pytest.mark.parametrize("permutation", ["sklearn", "keyed"])
@pytest.mark.parametrize("spec", SPECS)
def test_each_ranks_part_of_the_split_is_its_share_of_the_whole(spec, permutation):
    """split_part (`mpinn eval --rows`, each rank alone): the rank's rows of split_indices' test or
    train rows (the whole split, drawn in one process), ascending local positions."""
    n, fraction, seed = 1003, 0.3, 11
    all_train, all_test = split_indices(n, fraction, seed, permutation)
    for size in (1, 2, 3, 7):
        for part, whole in (("test", all_test), ("train", all_train)):
            found = []
            for rank in range(size):
                shard = make_shard(n, rank, size, _spec(spec, size), seed=3)
                local = split_part(n, fraction, seed, shard, permutation, part)
                assert local.tolist() == sorted(local.tolist())
                found.extend(shard.rows[local].tolist())
            assert sorted(found) == sorted(whole.tolist()), (size, part)


@pytest.mark.parametrize("spec", SPECS)
def test_keyed_hold_out_is_the_same_on_any_rank_count(spec):
    """--early-stopping's hold-out under the keyed permutation: train index t is held out iff
    P(t) < n_val, the others take P(t) - n_val (P written out whole here, in one process), on
    any rank count; rows moved to another shard (for_shard) keep the hold-out."""
    n, n_val, key = 1003, 71, 987654321
    whole = split_rows(n, 0.3, 11, make_shard(n, 0, 1), "keyed")[0]  # one rank: local = global row
    P = KeyedPermutation(whole.n, key)(np.arange(whole.n))
    want_val = set(whole.local[whole.index[P[whole.index] < n_val]].tolist())
    want_train = {int(P[t]) - n_val: int(whole.local[i]) for i, t in enumerate(whole.index) if P[t] >= n_val}
    for size in (1, 2, 3, 7):
        val, train = [], {}
        for rank in range(size):
            shard = make_shard(n, rank, size, _spec(spec, size), seed=3)
            mine, held = split_rows(n, 0.3, 11, shard, "keyed")[0].hold_out_keyed(n_val, key)
            assert mine.n == whole.n - n_val and mine.index.tolist() == sorted(mine.index.tolist())
            train.update(zip(mine.index.tolist(), shard.rows[mine.local].tolist()))
            val.extend(shard.rows[held].tolist())
            other = make_shard(n, (rank + 1) % size, size, "block")
            moved = mine.for_shard(other)
            again = split_rows(n, 0.3, 11, other, "keyed")[0].hold_out_keyed(n_val, key)[0]
            assert moved.index.tolist() == again.index.tolist() and moved.local.tolist() == again.local.tolist()
        assert train == want_train and sorted(val) == sorted(want_val) and len(val) == n_val


def test_sklearn_split_is_train_test_split():
    n = 150
    train, test = split_rows(n, 0.2, 42, make_shard(n, 0, 1), "sklearn")
    want_train, want_test = train_test_split_indices(n, 0.2, 42)
    assert train.rows.tolist() == want_train.tolist() and test.tolist() == want_test.tolist()
    with pytest.raises(InputError, match="leaves no train or no test rows"):
        split_rows(3, 0.99, 0, make_shard(3, 0, 1), "keyed")


# ---- the same global batches on any rank count --------------------------------------------

@pytest.mark.parametrize("permutation", ["sklearn", "keyed"])
@pytest.mark.parametrize("shuffle", ["global", "none"])
@pytest.mark.parametrize("spec", SPECS)
def test_ranks_together_take_the_one_rank_batches_in_order(permutation, shuffle, spec):
    n = 213  # 170 training rows
    ref = _schedules(n, 1, "block", permutation, shuffle)
    want = [_epoch(ref, epoch) for epoch in range(3)]
    for size in (2, 3, 5):
        ranks = _schedules(n, size, spec, permutation, shuffle)
        for epoch in range(3):
            _assert_same_batches(_epoch(ranks, epoch), want[epoch])
    # The reference itself: every training row once per epoch, in batches of 8 (the last short).
    batches = [b[0] for b in want[0]]
    assert [len(b) for b in batches] == [8] * 21 + [2]
    assert sorted(np.concatenate(batches).tolist()) == sorted(ref[0].train.local.tolist())
    if shuffle == "global":
        assert [b[0].tolist() for b in want[1]] != [b[0].tolist() for b in want[2]]


@pytest.mark.parametrize("permutation", ["sklearn", "keyed"])
def test_mid_epoch_resume_on_another_rank_count_continues_exactly(permutation):
    """3 ranks stop at epoch 1 step 5; 2 ranks (other shards) load their state and continue:
    the rest of that epoch and the next one are the uninterrupted run's batches."""
    n, stop = 150, 5
    ref = _schedules(n, 1, "block", permutation)
    want = [_epoch(ref, e) for e in range(3)]
    first = _schedules(n, 3, "strided", permutation)
    _epoch(first, 0)
    for _, _ in zip(range(stop), zip(*(s.epoch(1) for s in first))):
        pass
    arrays, scalars = first[0].state(), first[0].scalars()
    rng_state = first[0].random_state.get_state()
    second = _schedules(n, 2, "block", permutation)
    for s in second:
        s.check_resume(scalars, mid_epoch=True)
        s.load_state(arrays, scalars)
        s.random_state.set_state(rng_state)
    _assert_same_batches(_epoch(second, 1, start_step=stop), want[1][stop:])
    _assert_same_batches(_epoch(second, 2), want[2])


@pytest.mark.parametrize("permutation", ["sklearn", "keyed"])
def test_rows_moving_between_ranks_mid_epoch_keep_the_batches(permutation):
    """Dynamic load balancing rebuilds each schedule over a new shard at the same place of the
    same epoch (Trainer._take_shares): the batches do not change."""
    n, size, stop = 150, 3, 4
    want = _epoch(_schedules(n, 1, "block", permutation), 0)
    ranks = _schedules(n, size, "block", permutation)
    for _, _ in zip(range(stop), zip(*(s.epoch(0) for s in ranks))):
        pass
    moved = []
    for s in ranks:
        shard = make_shard(n, s.shard.rank, size, "block", shares=[0.6, 0.1, 0.3])
        new = BatchSchedule(s.train, 8, "global", s.random_state, shard, permutation=permutation)
        new.load_state(s.state(), s.scalars())
        moved.append(new)
    _assert_same_batches(_epoch(moved, 0, start_step=stop), want[stop:])


class _CountingShard:
    """A shard that counts local_positions calls (the per-epoch index work)."""

    def __init__(self, shard):
        self.shard, self.calls = shard, 0

    def __getattr__(self, name):
        return getattr(self.shard, name)

    def local_positions(self, rows):
        self.calls += 1
        return self.shard.local_positions(rows)


@pytest.mark.parametrize("permutation", ["sklearn", "keyed"])
def test_a_rank_places_its_rows_once_per_epoch_not_once_per_step(permutation):
    n, batch = 5000, 10  # 400 steps of the train split
    shard = _CountingShard(make_shard(n, 1, 4))
    train, _ = split_rows(n, 0.2, 1, shard, permutation)
    sched = BatchSchedule(train, batch, "global", np.random.RandomState(0), shard, permutation=permutation)
    shard.calls = 0
    assert len(list(sched.epoch(0))) == 400
    assert shard.calls == (0 if permutation == "keyed" else 1)  # sklearn: one pass over the order


def test_keyed_schedule_memory_is_the_ranks_share():
    """Rank 0 of 1,000 over 10^7 rows (10^4 rows each): split and one epoch peak far below one
    int32 array of the 10^7 rows (40 MB), within 64 bytes a row of the rank's share + 1 MB."""
    n, size = 10**7, 1000
    tracemalloc.start()
    try:
        shard = make_shard(n, 0, size)
        train, test = split_rows(n, 0.2, 0, shard, "keyed")
        sched = BatchSchedule(train, 200 * size, "global", np.random.RandomState(0), shard, permutation="keyed")
        rows = sum(len(part) for part in sched.epoch(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == train.local.size and abs(rows - 8000) < 400 and abs(len(test) - 2000) < 400
    assert peak < 64 * shard.count + (1 << 20), peak


def test_train_rows_from_a_global_array_are_this_shards_rows():
    rows = np.random.RandomState(0).permutation(40)[:30]
    shard = make_shard(40, 1, 3, "strided")
    t = TrainRows.from_array(rows, shard)
    assert t.n == 30 and shard.rows[t.local].tolist() == [g for g in rows.tolist() if g % 3 == 1]
    assert rows[t.index].tolist() == shard.rows[t.local].tolist()


# ---- --shuffle local: a mid-epoch resume on another layout is refused ------------------------

def test_local_shuffle_resume_on_another_layout_is_refused():
    saved = _schedules(100, 3, "block", "sklearn", shuffle="local")[0].scalars()
    same = _schedules(100, 3, "block", "sklearn", shuffle="local")[1]
    same.check_resume(saved, mid_epoch=True)  # the same layout continues exactly
    for other in (_schedules(100, 2, "block", "sklearn", shuffle="local")[0],
                  _schedules(100, 3, "strided", "sklearn", shuffle="local")[0]):
        other.check_resume(saved, mid_epoch=False)  # an epoch boundary is fine
        with pytest.raises(InputError, match="part-way through an epoch of --shuffle local on 3 rank"):
            other.check_resume(saved, mid_epoch=True)
    with pytest.raises(InputError, match="--permutation sklearn"):
        _schedules(100, 2, "block", "keyed")[0].check_resume(saved, mid_epoch=False)


SHORT = ["--hidden", "6", "--solver", "sgd", "--epochs", "6", "--batch-size", "16", "--seed", "3", "--quiet"]


def test_cli_refuses_a_local_shuffle_resume_on_another_rank_count(iris, tmp_path):
    """Preempted mid-epoch with --shuffle local on 2 ranks: resuming on 3 is one line, exit 2,
    on every rank, the checkpoint untouched; on 2 ranks it goes on."""
    import mpinn

    args = ["train", "--data", iris, "--shuffle", "local", *SHORT]
    ck = tmp_path / "ck"
    proc = run(args + ["--checkpoint", ck], np_=2, check=False, env=clean_env(MPINN_FAULT="1:23:term"))
    assert proc.returncode == 75, proc.stderr
    before = sorted(p.name for p in ck.iterdir())
    refused = run(args + ["--checkpoint", ck, "--resume"], np_=3, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "mpinn: error: --resume: the checkpoint stopped part-way through an epoch of --shuffle local on 2 rank(s), "
        "--shard block; this run has 3 rank(s), --shard block: resume on the same layout, or from an "
        "end-of-epoch checkpoint"]
    assert sorted(p.name for p in ck.iterdir()) == before
    run(args + ["--checkpoint", ck, "--resume"], np_=2)  # the same layout: continues (exact, as before)
    assert len(mpinn.load(ck).loss_curve_) == 6


def test_cli_keyed_permutation_resumes_mid_epoch_on_another_rank_count(iris, tmp_path):
    """--permutation keyed with a --test-fraction split: preempted mid-epoch on 2 ranks,
    resumed on 3, the uninterrupted 1-rank model (to rounding); `mpinn eval` scores its test rows."""
    import mpinn

    args = ["train", "--data", iris, "--permutation", "keyed", "--test-fraction", "0.2", *SHORT]
    run(args + ["--checkpoint", tmp_path / "ref"])
    ck = tmp_path / "ck"
    proc = run(args + ["--checkpoint", ck], np_=2, check=False, env=clean_env(MPINN_FAULT="1:17:term"))
    assert proc.returncode == 75, proc.stderr
    resumed = json.loads(run(args + ["--checkpoint", ck, "--resume", "--json"], np_=3).stdout.splitlines()[-1])
    a, b = mpinn.load(tmp_path / "ref"), mpinn.load(ck)
    assert len(b.loss_curve_) == 6
    # `mpinn eval` redraws the keyed split from the checkpoint: the run's own test rows and metrics.
    scored = json.loads(run(["eval", "--model", ck, "--data", iris, "--json"], np_=2).stdout.splitlines()[-1])
    assert (scored["rows"], scored["n_rows"]) == ("test", 30) and scored["accuracy"] == resumed["test_accuracy"]
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert np.max(np.abs(x - y)) <= 1e-10 * np.max(np.abs(x))
