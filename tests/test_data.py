"""HDF5 checks, shard reads (byte-level), the train/test split and the batch schedule."""

import io

import h5py
import numpy as np
import pytest

from mpinn.data import hdf5 as datamod
from mpinn.data import schedule
from mpinn.data.builtin import write_hdf5
from mpinn.errors import InputError
from mpinn.data.partition import make_shard


class CountingFile(io.RawIOBase):
    """A file object that records every (offset, length) h5py reads through it."""

    def __init__(self, path):
        self.f = open(path, "rb")
        self.reads = []

    def readinto(self, buf):
        pos = self.f.tell()
        n = self.f.readinto(buf)
        self.reads.append((pos, n))
        return n

    def seek(self, *args):
        return self.f.seek(*args)

    def tell(self):
        return self.f.tell()

    def readable(self):
        return True

    def seekable(self):
        return True

    def close(self):
        self.f.close()
        super().close()


@pytest.fixture
def data_file(tmp_path):
    X = np.arange(101 * 3, dtype=np.float64).reshape(101, 3)
    y = np.arange(101) % 4
    path = tmp_path / "d.h5"
    write_hdf5(path, X, y)
    return str(path), X, y


@pytest.mark.parametrize("spec,size,shares", [(s, n, None) for s in ("block", "strided", "random") for n in (1, 2, 3)]
                         + [("weighted:1,3,2", 3, None), ("weighted:0,1", 2, None), ("random:7", 3, None),
                            ("random", 8, None)]
                         + [(s, 3, (0.6, 0.1, 0.3)) for s in ("block", "strided", "random:4")])
def test_each_rank_reads_only_its_rows(data_file, spec, size, shares):
    path, X, y = data_file
    info = datamod.inspect(path)
    for rank in range(size):
        shard = make_shard(info.n_rows, rank, size, spec, seed=3, shares=shares)
        counting = CountingFile(path)
        with h5py.File(counting, "r") as f:
            x_start = f["X"].id.get_offset()
            y_start = f["y"].id.get_offset()
            counting.reads.clear()
            Xl, yl = datamod.read_shard(f, info, shard, np.float64)
        counting.close()
        np.testing.assert_array_equal(Xl, X[shard.rows])
        np.testing.assert_array_equal(yl, y[shard.rows])
        # Every byte read from a dataset's storage belongs to an owned row, and all owned rows
        # are read: the exact set of row byte ranges, nothing more.
        for start, row_bytes, total in ((x_start, 3 * 8, 101), (y_start, 8, 101)):
            touched = set()
            for pos, n in counting.reads:
                lo, hi = max(pos, start), min(pos + n, start + row_bytes * total)
                if lo < hi:
                    assert (lo - start) % row_bytes == 0 and (hi - lo) % row_bytes == 0
                    touched.update(range((lo - start) // row_bytes, (hi - start) // row_bytes))
            assert touched == set(shard.rows.tolist())


@pytest.mark.parametrize("spec", ["block", "strided", "random:4"])
def test_moved_rows_are_read_only_by_the_rank_that_gains_them(data_file, spec):
    """Dynamic rebalancing (problem.keep_and_read): a rank's new shard is its old rows, kept (and
    still scaled), plus the rows it gains, read from the file: the rows read are exactly those."""
    from mpinn.preprocessing.scalers import StandardScaler
    from mpinn.train.problem import Problem, keep_and_read

    path, X, y = data_file
    info = datamod.inspect(path)
    scaler = StandardScaler().fit(X)
    for rank in range(3):
        old = make_shard(info.n_rows, rank, 3, spec, seed=3)
        new = make_shard(info.n_rows, rank, 3, spec, seed=3, shares=(0.6, 0.1, 0.3))
        problem = Problem(task="classify", X=scaler.transform(X[old.rows]), y=y[old.rows], shard=old,
                          train_rows=np.zeros(0, np.int64), n_features=3, scaler=scaler)
        counting = CountingFile(path)
        with h5py.File(counting, "r") as f:
            x_start = f["X"].id.get_offset()
            counting.reads.clear()
            Xl, yl = keep_and_read(problem, f, info, new, np.float64)
        counting.close()
        np.testing.assert_allclose(Xl, scaler.transform(X[new.rows]), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(yl, y[new.rows])
        touched = set()
        for pos, n in counting.reads:
            lo, hi = max(pos, x_start), min(pos + n, x_start + 3 * 8 * 101)
            if lo < hi:
                touched.update(range((lo - x_start) // 24, (hi - x_start - 1) // 24 + 1))
        assert touched == set(new.rows.tolist()) - set(old.rows.tolist()), (spec, rank)


def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    return str(path)


def test_inspect_reports_layout_problems(tmp_path):
    good = np.zeros((4, 2))
    cases = [
        (str(tmp_path / "missing.h5"), "not found"),
        (str(tmp_path / "text.h5"), "not an HDF5 file"),
        (_h5(tmp_path / "noy.h5", X=good, labels=np.zeros(4)), "no dataset 'y' (datasets in file: X, labels)"),
        (_h5(tmp_path / "x1d.h5", X=np.zeros(4), y=np.zeros(4)), "must be 2-D"),
        (_h5(tmp_path / "len.h5", X=good, y=np.zeros(3)), "'y' has 3 rows but 'X' has 4"),
        (_h5(tmp_path / "cplx.h5", X=good, y=np.zeros(4, dtype=complex)), "targets must be numbers or"),
        (_h5(tmp_path / "xstr.h5", X=np.array([[b"a"], [b"b"]]), y=np.zeros(2)), "non-numeric dtype"),
        (_h5(tmp_path / "empty.h5", X=np.zeros((0, 2)), y=np.zeros(0)), "is empty"),
    ]
    (tmp_path / "text.h5").write_text("hello")
    for path, message in cases:
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            datamod.inspect(path)


def test_split_equals_sklearn_train_test_split():
    ms = pytest.importorskip("sklearn.model_selection")
    for n, frac, seed in [(150, 0.2, 42), (101, 0.33, 0), (10, 0.25, 7)]:
        train, test = schedule.train_test_split_indices(n, frac, seed)
        sk_train, sk_test = ms.train_test_split(np.arange(n), test_size=frac, random_state=seed)
        assert train.tolist() == sk_train.tolist() and test.tolist() == sk_test.tolist()


def test_global_schedule_reproduces_sklearn_shuffles():
    utils = pytest.importorskip("sklearn.utils")
    n, batch = 37, 10
    rows = np.arange(n)
    shard = make_shard(n, 0, 1)
    sched = schedule.BatchSchedule(rows, batch, "global", np.random.RandomState(5), shard)
    sk_rng, sample_idx = np.random.RandomState(5), np.arange(n)
    for _ in range(4):
        ours = np.concatenate(list(sched.epoch()))
        sample_idx = utils.shuffle(sample_idx, random_state=sk_rng)
        assert ours.tolist() == sample_idx.tolist()


@pytest.mark.parametrize("shuffle", ["global", "none"])
@pytest.mark.parametrize("spec", ["block", "strided", "weighted:2,1,1"])
def test_ranks_together_take_exactly_the_global_batches(shuffle, spec):
    n, batch, size = 53, 8, 3
    train_rows = np.random.RandomState(0).permutation(n)[:45]
    ref = schedule.BatchSchedule(train_rows, batch, shuffle, np.random.RandomState(9), make_shard(n, 0, 1))
    per_rank = []
    for r in range(size):
        shard = make_shard(n, r, size, spec)
        sched = schedule.BatchSchedule(train_rows, batch, shuffle, np.random.RandomState(9), shard)
        per_rank.append([[shard.rows[p] for p in sched.epoch()] for _ in range(3)])
    for epoch in range(3):
        # With one rank, local positions are global row ids.
        for step, want in enumerate(ref.epoch()):
            got = np.concatenate([per_rank[r][epoch][step] for r in range(size)])
            assert sorted(got.tolist()) == sorted(want.tolist())
            assert set(want.tolist()) <= set(train_rows.tolist())


def test_local_shuffle_visits_each_owned_row_once_per_epoch():
    n, batch, size = 50, 7, 3
    steps = None
    for r in range(size):
        shard = make_shard(n, r, size)
        sched = schedule.BatchSchedule(np.arange(n), batch, "local", np.random.RandomState(0), shard, local_seed=3)
        pieces = list(sched.epoch())
        steps = steps or len(pieces)
        assert len(pieces) == steps == 8  # lockstep: same step count on every rank
        assert sorted(np.concatenate(pieces).tolist()) == list(range(shard.count))


def test_batch_size_resolution():
    assert datamod.resolve_batch_size("auto", 150) == 150
    assert datamod.resolve_batch_size("auto", 5000) == 200
    assert datamod.resolve_batch_size("full", 5000) == 5000
    assert datamod.resolve_batch_size(10**6, 30) == 30


def test_string_labels_are_read_as_str(tmp_path):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["X"] = np.zeros((5, 2))
        f.create_dataset("y", data=np.array(["b", "a", "c", "a", "b"], dtype=object), dtype=h5py.string_dtype())
    info = datamod.inspect(str(path))
    assert info.y_kind == "str"
    with h5py.File(path, "r") as f:
        _, y = datamod.read_shard(f, info, make_shard(5, 1, 2), np.float64)
    assert y.tolist() == ["a", "b"] and y.dtype.kind == "U"


def _old_global_batches(train_rows, batch, seed, epochs):
    """The schedule as it was with int64 train rows and order: the reference for the int32 one."""
    rng, order = np.random.RandomState(seed), np.arange(len(train_rows))
    out = []
    for _ in range(epochs):
        perm = np.arange(len(train_rows))
        rng.shuffle(perm)
        order = order[perm]
        out.append([np.asarray(train_rows, np.int64)[order[s:s + batch]] for s in range(0, len(order), batch)])
    return out


@pytest.mark.parametrize("spec", ["block", "strided"])
def test_int32_order_gives_the_int64_batches(spec):
    """Train rows and the epoch's order are kept as int32 (index_dtype): the same draws and the
    same batches as the int64 arrays they replace; checkpoints still get the order as int64."""
    n, batch, size = 1000, 64, 3
    train, _ = schedule.train_test_split_indices(n, 0.2, 3)
    assert train.dtype == np.int32 and schedule.index_dtype(2**31) == np.int64
    want = _old_global_batches(train, batch, 11, 3)
    scheds = [schedule.BatchSchedule(train, batch, "global", np.random.RandomState(11), make_shard(n, r, size, spec))
              for r in range(size)]
    for epoch in range(3):
        parts = [[s.shard.rows[p] for p in s.epoch(epoch)] for s in scheds]
        for step, rows in enumerate(want[epoch]):
            got = np.concatenate([parts[r][step] for r in range(size)])
            assert sorted(got.tolist()) == sorted(rows.tolist())
        assert scheds[0].order.dtype == np.int32
        state = scheds[0].state()["order"]
        assert state.dtype == np.int64
    # Resume: a schedule restored from the int64 state continues with the same batches.
    fresh = schedule.BatchSchedule(train, batch, "global", np.random.RandomState(11), make_shard(n, 0, 1))
    fresh.load_state({"order": scheds[0].state()["order"]})
    assert fresh.order.dtype == np.int32
    assert np.array_equal(fresh.order, scheds[0].order)
    first = next(fresh.epoch(2, start_step=1))
    assert first.tolist() == want[2][1].tolist()


def test_non_finite_row_found_with_small_blocks():
    """The NaN/Inf check goes a block of at most 64 KiB of mask at a time: same row as one pass."""
    from mpinn.train.problem import first_non_finite_row

    X = np.zeros((500, 300), np.float32)  # default block: 218 rows
    assert first_non_finite_row(X) is None
    for row in (0, 217, 218, 499):
        X[...] = 0
        X[row, 7] = np.inf
        X[min(row + 1, 499), 3] = np.nan
        assert first_non_finite_row(X) == first_non_finite_row(X, block=len(X)) == row
