"""Streaming mode (mpinn.data.stream): bounded window of chunks, same model as in memory with
shuffle none, every row visited once per epoch with the chunk-order shuffle."""

import numpy as np
import pytest

from mpinn.parallel.comm import Comm
from mpinn.train.config import TrainConfig
from mpinn.data.builtin import make_synthetic, write_hdf5
from mpinn.errors import InputError
from mpinn.data.partition import make_shard
from mpinn.train.problem import load_problem
from mpinn.data.stream import StreamingRows
from mpinn.train.loop import Trainer


class _Serial:
    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1


@pytest.fixture
def data(tmp_path):
    X, y = make_synthetic(1000, 6, 3, seed=1)
    path = tmp_path / "d.h5"
    write_hdf5(path, X, y)
    return path, X, y


def _fit(path, stream, shuffle="none", **kw):
    cfg = TrainConfig(**{"data": str(path), "hidden": (8,), "epochs": 3, "batch_size": 64, "seed": 2,
                         "shuffle": shuffle, **kw}).validate()
    comm = Comm(_Serial())
    problem = load_problem(cfg, comm, stream=stream, chunk_rows=100)  # 10 chunks, as on real data
    return Trainer(cfg, problem, comm, log=lambda line: None).fit()


@pytest.mark.parametrize("classes", [3, 2])  # softmax and logistic outputs
def test_streaming_trains_the_same_model_as_in_memory_with_shuffle_none(tmp_path, classes):
    X, y = make_synthetic(1000, 6, classes, seed=1)
    path = tmp_path / "d.h5"
    write_hdf5(path, X, y)
    a, b = _fit(path, False), _fit(path, True)
    assert np.array_equal(a.params, b.params)
    assert a.loss_curve == b.loss_curve


@pytest.mark.parametrize("step", [1, 3])
def test_rows_and_window(data, step):
    path, X, _ = data
    shard = make_shard(len(X), 1, step, "strided") if step > 1 else make_shard(len(X), 0, 1)
    s = StreamingRows(str(path), "X", shard, X.shape[1], np.float64, chunk_rows=37, read_ahead=2)
    mine = X[shard.as_slice()]
    out = np.empty((50, X.shape[1]))
    for start in range(0, len(mine), 50):
        rows = np.arange(start, min(start + 50, len(mine)))
        np.take(s, rows, axis=0, out=out[: len(rows)])
        assert np.array_equal(out[: len(rows)], mine[rows])
        assert len(s._loaded) <= s.read_ahead + 2
    assert s.first_non_finite_row() is None
    s.close()


def test_chunk_order_shuffle_visits_every_row_once(data):
    path, X, _ = data
    tr = _fit(path, True, shuffle="local", epochs=1)
    seen = np.concatenate(list(tr.schedule.epoch(1)))
    assert sorted(seen.tolist()) == list(range(len(X)))
    assert not np.array_equal(seen, np.arange(len(X)))


def test_streaming_refuses_global_shuffle(data):
    path, _, _ = data
    with pytest.raises(InputError, match="shuffle"):
        _fit(path, True, shuffle="global")


# ---- `mpinn train --stream` under mpiexec --------------------------------------------------


def _weights(directory):
    import mpinn

    model = mpinn.load(directory)
    return model.coefs_ + model.intercepts_


@pytest.mark.parametrize("n", [2, 3])
def test_train_stream_flag_matches_in_memory_and_resumes(tmp_path, n):
    from launch import clean_env, run

    X, y = make_synthetic(3000, 6, 3, seed=4)
    write_hdf5(tmp_path / "d.h5", X, y)
    common = ["train", "--data", tmp_path / "d.h5", "--hidden", "8", "--epochs", "4", "--batch-size", "64",
              "--shuffle", "none", "--quiet"]
    run(common + ["--checkpoint", tmp_path / "mem"], np_=n)
    run(common + ["--stream", "--checkpoint", tmp_path / "st"], np_=n)
    for a, b in zip(_weights(tmp_path / "mem"), _weights(tmp_path / "st")):
        np.testing.assert_array_equal(a, b)
    # Preempted mid-epoch (step 60 of 4 x 47), resumed in streaming mode: the same model again.
    proc = run(common + ["--stream", "--checkpoint", tmp_path / "pre"], np_=n, check=False,
               env=clean_env(MPINN_FAULT=f"{n - 1}:60:term"))
    assert proc.returncode == 75, proc.stderr
    run(common + ["--stream", "--checkpoint", tmp_path / "pre", "--resume"], np_=n)
    for a, b in zip(_weights(tmp_path / "mem"), _weights(tmp_path / "pre")):
        np.testing.assert_array_equal(a, b)


def test_train_stream_with_global_shuffle_is_refused_before_reading(tmp_path):
    from launch import run

    proc = run(["train", "--data", tmp_path / "missing.h5", "--stream"], np_=2, check=False, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mpinn: error: --stream: use --shuffle none (the same batches as in memory) or local (chunk order and "
        "rows within chunks shuffled); global would read the whole shard every batch"]


@pytest.mark.parametrize("spec,shares", [("random:23", None), ("random", (0.7, 0.3)), ("strided", (0.7, 0.3)),
                                         ("block", (0.2, 0.8))])
def test_streaming_a_shard_of_many_hyperslabs(data, spec, shares):
    """A random shard (runs of chunks) or one resized by shares: each stream chunk is read
    hyperslab by hyperslab and holds the shard's rows in order."""
    path, X, _ = data
    shard = make_shard(len(X), 1, 2, spec, seed=4, shares=shares)
    s = StreamingRows(str(path), "X", shard, X.shape[1], np.float64, chunk_rows=41, read_ahead=1)
    mine = X[shard.rows]
    out = np.empty((60, X.shape[1]))
    for start in range(0, len(mine), 60):
        rows = np.arange(start, min(start + 60, len(mine)))
        np.take(s, rows, axis=0, out=out[: len(rows)])
        assert np.array_equal(out[: len(rows)], mine[rows])
    assert np.array_equal(s[[0, 5, len(mine) - 1]], mine[[0, 5, len(mine) - 1]])
    s.close()


def test_train_stream_closes_its_file_and_reader_thread(data):
    """`mpinn train --stream` leaves no open HDF5 file and no read-ahead thread behind."""
    import threading

    import h5py

    from mpinn.cli.app import main

    path, _, _ = data
    before = set(threading.enumerate())
    files_before = {f.id for f in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)}  # other tests' files
    assert main(["train", "--data", str(path), "--stream", "--shuffle", "none", "--hidden", "4",
                 "--epochs", "2", "--quiet"]) == 0
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not [f for f in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE) if f.id not in files_before]


def test_streaming_rows_close_is_idempotent_and_a_context_manager(data):
    path, _, _ = data
    shard = make_shard(1000, 0, 1)
    with StreamingRows(path, "X", shard, 6, np.float64, chunk_rows=100) as rows:
        assert rows[np.arange(5)].shape == (5, 6)
    assert not rows._file.id.valid
    rows.close()
