"""`mpinn predict` in rounds (mpinn/train/predict.py): the same predictions as the model's own
predict on all rows, for any rank count and round size, and a rank 0 whose memory does not
grow with the rows.

Under `mpiexec -n 2|3 ... --with-mpi -m mpi` (make test) and serially. The memory test counts
what tracemalloc sees (every numpy buffer and Python object); bench/predict_memory.py measures
rank 0's peak RSS of the command itself (docs/performance.md).
"""

import tracemalloc

import h5py
import numpy as np
import pytest

from mpinn.parallel.comm import Comm
from mpinn.nn.fitted import FittedMLP
from mpinn.train.predict import predict_to_file

MPI = pytest.importorskip("mpi4py.MPI")


def _fitted(task, n_features=5, seed=0):
    rng = np.random.RandomState(seed)
    k = {"names": 3, "binary": 1, "regress": 2}[task]
    sizes = [n_features, 7, k]
    coefs = [rng.normal(size=(a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    intercepts = [rng.normal(size=b) for b in sizes[1:]]
    if task == "regress":
        return FittedMLP(coefs, intercepts, activation="tanh", output="identity", task="regress")
    if task == "binary":
        return FittedMLP(coefs, intercepts, activation="relu", output="logistic", task="classify",
                         classes=np.array([3, 8]))
    return FittedMLP(coefs, intercepts, activation="relu", output="softmax", task="classify",
                     classes=np.arange(3), class_names=["a", "bé", "c"])


def _shared_dir(comm, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("predict")) if comm.rank == 0 else None
    return comm.bcast_json(path)


def _write_data(comm, path, n, n_features=5):
    X = np.random.RandomState(n).normal(size=(n, n_features))
    if comm.rank == 0:
        with h5py.File(path, "w") as f:
            f["X"] = X
    comm.barrier()
    return X


def _check(fitted, X, out):
    # Values to rounding: a round of one row is a vector-matrix product (not BLAS's gemm).
    with h5py.File(out, "r") as f:
        assert f.attrs["mpinn_format"] == "mpinn-predictions"
        if fitted.task == "regress":
            np.testing.assert_allclose(f["y_pred"][()], fitted.predict(X), rtol=1e-12, atol=1e-14)
            return
        np.testing.assert_allclose(f["proba"][()], fitted.predict_proba(X), rtol=1e-12, atol=1e-14)
        if fitted.class_names:
            np.testing.assert_array_equal(f["y_pred"].asstr()[()], fitted.predict(X))
            np.testing.assert_array_equal(f["y_pred_code"][()], fitted.classes_[np.argmax(fitted.forward(X), 1)])
        else:
            np.testing.assert_array_equal(f["y_pred"][()], fitted.predict(X))
            assert "y_pred_code" not in f


def _predictions_match(comm, tmp_path_factory):
    directory = _shared_dir(comm, tmp_path_factory)
    files = {n: _write_data(comm, f"{directory}/x{n}.h5", n) for n in (20, 1001)}
    # Rounds of one row per rank on 3 ranks (fewer rows than ranks in the last), uneven
    # rounds, and all rows in one.
    for task in ("names", "binary", "regress"):
        fitted = _fitted(task)
        for n, round_rows in ((20, 3), (1001, 97), (1001, 5000)):
            out = f"{directory}/{task}-{round_rows}.h5"
            assert predict_to_file(fitted, f"{directory}/x{n}.h5", "X", out, comm, rows_per_rank=round_rows) == n
            if comm.rank == 0:
                _check(fitted, files[n], out)


def test_predictions_match_the_models_serially(tmp_path_factory):
    _predictions_match(Comm(MPI.COMM_SELF), tmp_path_factory)


@pytest.mark.mpi(min_size=2)
def test_predictions_match_the_models_on_every_rank_count(world, tmp_path_factory):
    _predictions_match(Comm(world), tmp_path_factory)


def _peak(comm, fitted, data, out, rows_per_rank):
    tracemalloc.start()
    try:
        predict_to_file(fitted, data, "X", out, comm, rows_per_rank=rows_per_rank)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _memory_does_not_grow(comm, tmp_path_factory):
    from mpinn.train.predict import ALIGN_ROWS

    directory = _shared_dir(comm, tmp_path_factory)
    # Rank blocks are whole runs of ALIGN_ROWS rows: with 7 of them, up to 7 ranks have rows in both files.
    small, big = 7 * ALIGN_ROWS, 14 * ALIGN_ROWS
    for n in (small, big):
        _write_data(comm, f"{directory}/x{n}.h5", n, n_features=20)
    for task in ("binary", "names"):
        fitted = _fitted(task, n_features=20)
        # A first run imports h5py's and numpy's lazily loaded parts and fills Python's free lists
        # (a few KB that stay allocated): not part of either measurement.
        _peak(comm, fitted, f"{directory}/x{small}.h5", f"{directory}/p.h5", rows_per_rank=1024)
        peaks = [_peak(comm, fitted, f"{directory}/x{n}.h5", f"{directory}/p{n}.h5", rows_per_rank=1024)
                 for n in (small, big)]
        # 57,344 more rows of 20 float64 features and 2-3 outputs: 10 MB if any of it were held;
        # a rank holds ~0.2 MB of arrays per round here (rounds of 1,024 rows, full on both files
        # up to 7 ranks; a few hundred bytes of h5py objects per round wait for the cyclic
        # garbage collector). String labels keep one byte per row of the rank's block until
        # they are written, twice while they are joined.
        kept = 2 * (big - small) // comm.size if task == "names" else 0
        assert peaks[1] < 1.1 * peaks[0] + kept, (task, peaks)


def test_memory_does_not_grow_with_the_rows_serially(tmp_path_factory):
    _memory_does_not_grow(Comm(MPI.COMM_SELF), tmp_path_factory)


@pytest.mark.mpi(min_size=2)
def test_rank_zeros_memory_does_not_grow_with_the_rows(world, tmp_path_factory):
    _memory_does_not_grow(Comm(world), tmp_path_factory)


def test_a_float32_model_s_probabilities_come_from_float64_scores(tmp_path):
    """The outputs are computed from the scores in float64, whatever the model's dtype: for a
    logistic output [1 - p, p] is not rounded to float32 (mpinn predict wrote it so before)."""
    from mpinn.nn.fitted import class_proba

    comm = Comm(MPI.COMM_SELF)
    fitted = _fitted("binary")
    fitted = FittedMLP([c.astype(np.float32) for c in fitted.coefs_], [b.astype(np.float32) for b in fitted.intercepts_],
                       activation="relu", output="logistic", task="classify", classes=np.array([3, 8]))
    X = _write_data(comm, tmp_path / "x.h5", 300)
    predict_to_file(fitted, tmp_path / "x.h5", "X", tmp_path / "p.h5", comm, rows_per_rank=64)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        proba = f["proba"][()]
    want = class_proba(np.asarray(fitted.forward(X), dtype=np.float64))
    assert np.array_equal(proba, want) and not np.array_equal(want, class_proba(fitted.forward(X)).astype(np.float64))


def _datasets(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f}, dict(f.attrs)


def test_cli_output_on_3_ranks_equals_1_rank(tmp_path):
    """`mpinn predict` with string class names: every dataset and attribute of 3 ranks' output
    (rows written at offsets, names in turn) equals 1 rank's; the values equal the model's predict."""
    import mpinn
    from launch import run

    run(["data", "iris", tmp_path / "iris.h5"])
    run(["train", "--data", tmp_path / "iris.h5", "--hidden", "5", "--epochs", "3", "--checkpoint",
         tmp_path / "ck", "--quiet"])
    outs = {}
    for ranks in (1, 3):
        run(["predict", "--model", tmp_path / "ck", "--data", tmp_path / "iris.h5", "--out",
             tmp_path / f"p{ranks}.h5"], np_=ranks)
        outs[ranks] = _datasets(tmp_path / f"p{ranks}.h5")
    (one, one_attrs), (three, three_attrs) = outs[1], outs[3]
    assert set(one) == {"y_pred", "y_pred_code", "proba"} and one_attrs == three_attrs
    for name in one:
        np.testing.assert_array_equal(three[name], one[name], err_msg=name)
    with h5py.File(tmp_path / "iris.h5", "r") as f:
        X = f["X"][()]
    model = mpinn.load(tmp_path / "ck")
    assert [s.decode() for s in one["y_pred"]] == model.predict(X).tolist()
    np.testing.assert_allclose(one["proba"], model.predict_proba(X), rtol=1e-12, atol=1e-14)


def test_a_killed_predict_leaves_no_file_under_the_final_name(tmp_path):
    """SIGKILL to every rank while the ranks write their rows: nothing appears under --out."""
    import os
    import signal
    import subprocess
    import time

    from launch import TIMEOUT, clean_env, command, run

    run(["data", "synthetic", tmp_path / "x.h5", "--samples", "400000", "--features", "8", "--classes", "3"])
    run(["train", "--data", tmp_path / "x.h5", "--hidden", "4", "--epochs", "1", "--checkpoint", tmp_path / "ck",
         "--quiet"])
    out = tmp_path / "out" / "p.h5"
    out.parent.mkdir()
    proc = subprocess.Popen(command(["predict", "--model", tmp_path / "ck", "--data", tmp_path / "x.h5", "--out", out],
                                    np_=2), env=clean_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not list(out.parent.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # until the temporary file exists
        assert proc.poll() is None, "predict finished before it could be killed: use more rows"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    names = [p.name for p in out.parent.iterdir()]
    assert "p.h5" not in names and all(n.startswith(".p.h5.") for n in names), names


def test_rank_blocks_start_where_the_forward_pass_cuts_its_chunks():
    import inspect

    from mpinn.nn.model import MLP
    from mpinn.train.predict import ALIGN_ROWS, ROWS_PER_RANK, rank_bounds

    assert inspect.signature(MLP.forward).parameters["chunk_rows"].default == ALIGN_ROWS
    assert ROWS_PER_RANK % ALIGN_ROWS == 0
    for n, size in ((0, 3), (5, 3), (ALIGN_ROWS * 7 + 5, 3), (ALIGN_ROWS * 2, 5), (10**9, 1000)):
        bounds = rank_bounds(n, size)
        assert bounds[0] == 0 and bounds[-1] == n and bounds == sorted(bounds)
        assert all(b % ALIGN_ROWS == 0 for b in bounds[:-1])
        sizes = np.diff(bounds)
        assert sizes.max() - sizes.min() <= ALIGN_ROWS


@pytest.mark.mpi(min_size=2)
def test_the_predictions_are_the_same_bytes_on_any_rank_count(world, tmp_path_factory):
    """A float32 model's scores of a row can differ by an ulp with the row's place in the forward
    pass's chunk (BLAS edge tiles): rank blocks that start off the chunk grid wrote other bytes
    than one rank (3b76c1d did too, in the rows a round split between ranks)."""
    from mpinn.train.predict import ALIGN_ROWS

    comm = Comm(world)
    directory = _shared_dir(comm, tmp_path_factory)
    n = 3 * ALIGN_ROWS + 1001
    if comm.rank == 0:
        with h5py.File(f"{directory}/x.h5", "w") as f:
            f["X"] = np.random.RandomState(1).normal(size=(n, 16)).astype(np.float32)
    comm.barrier()
    rng = np.random.RandomState(2)
    fitted = FittedMLP([rng.normal(size=(16, 16)).astype(np.float32), rng.normal(size=(16, 3)).astype(np.float32)],
                       [rng.normal(size=16).astype(np.float32), rng.normal(size=3).astype(np.float32)],
                       activation="relu", output="softmax", task="classify", classes=np.arange(3))
    predict_to_file(fitted, f"{directory}/x.h5", "X", f"{directory}/ranks.h5", comm)
    if comm.rank == 0:
        predict_to_file(fitted, f"{directory}/x.h5", "X", f"{directory}/one.h5", Comm(MPI.COMM_SELF))
        with h5py.File(f"{directory}/ranks.h5", "r") as f, h5py.File(f"{directory}/one.h5", "r") as g:
            assert set(f) == set(g) == {"y_pred", "proba"}
            for name in g:
                assert f[name].dtype == g[name].dtype
                assert f[name][()].tobytes() == g[name][()].tobytes(), name
