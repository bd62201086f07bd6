"""Feature scaling: mpinn.StandardScaler / MinMaxScaler against scikit-learn's on the whole data,
the pooled statistics, and `mpinn train --scale` through checkpoint, predict, load and exports.

Serial here (1 rank, and the CLI launched on 1, 2 and 3 ranks); the tests marked mpi run under
`mpiexec -n 2|3 python -m pytest --with-mpi -m mpi` (make test-2, test-3).
"""

import json
import os
import tempfile
import warnings

import h5py
import numpy as np
import pytest

import mpinn
from mpinn.preprocessing import stats as S
from mpinn.parallel.comm import Comm, SerialComm
from mpinn.data.builtin import load_iris, write_hdf5

sk_pre = pytest.importorskip("sklearn.preprocessing")

RNG = np.random.default_rng(7)
# Features on scales 1e-3 .. 1e4 with offsets, a constant column, 301 rows (not divisible by 2 or 3).
DATA = RNG.normal(size=(301, 5)) * [1.0, 1e4, 1e-3, 5.0, 0.0] + [0.0, 3e4, 2.0, -1.0, 7.0]
WEIGHTS = RNG.uniform(0.1, 2.0, size=len(DATA))
STANDARD = ("mean_", "var_", "scale_", "n_samples_seen_")
MINMAX = ("data_min_", "data_max_", "data_range_", "scale_", "min_", "n_samples_seen_")
IRIS_MLP = dict(hidden_layer_sizes=(8,), max_iter=30, random_state=0, learning_rate_init=0.01)


def assert_same_attributes(ours, ref, names, rtol=1e-12):
    """Equal to ``rtol``; the variance of the constant column is rounding noise (~1e-29 here,
    -1e-43 in sklearn) in both, and both give it scale 1."""
    for name in names:
        a, b = np.asarray(getattr(ours, name)), np.asarray(getattr(ref, name))
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-20 if name == "var_" else 0, err_msg=name)


def iris_um():
    """Iris with petal length and width in micrometres (features on scales ~1 and ~1e4)."""
    X, y, _, _ = load_iris()
    return X * [1, 1, 1e4, 1e4], y


def fit_quietly(pipeline, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached
        return pipeline.fit(X, y)


# ---- the statistics (pure functions) -------------------------------------------------------------


def test_pooled_moments_equal_the_whole_data_for_any_split():
    whole = S.block_moments(DATA)
    for cuts in ([150], [1, 2, 300], [100, 100, 200, 300]):
        parts = [S.block_moments(p) for p in np.split(DATA, cuts)]
        acc = np.zeros_like(whole)
        for p in parts:
            acc = S.combine_moments(acc, p)
        np.testing.assert_allclose(acc, whole, rtol=1e-13, atol=1e-9)
        # The same through blocks_moments, with weights sliced per block.
        np.testing.assert_allclose(S.blocks_moments(np.split(DATA, cuts), 5), whole, rtol=1e-13, atol=1e-9)
        np.testing.assert_allclose(S.blocks_moments(np.split(DATA, cuts), 5, WEIGHTS),
                                   S.block_moments(DATA, WEIGHTS), rtol=1e-13, atol=1e-9)
    # An empty part changes nothing, bit for bit.
    assert np.array_equal(S.combine_moments(S.block_moments(DATA[:0]), whole), whole)


def test_streamed_and_in_memory_statistics_are_bitwise_equal(tmp_path):
    from mpinn.data.partition import make_shard
    from mpinn.data.stream import StreamingRows

    write_hdf5(tmp_path / "d.h5", DATA, np.zeros(len(DATA), dtype=np.int64))
    comm = Comm(SerialComm())
    shard = make_shard(len(DATA), 0, 1, "block")
    # Chunks of 64 rows in both: what a StreamingRows of 8 MB chunks and the in-memory blocks share.
    rows = StreamingRows(tmp_path / "d.h5", "X", shard, DATA.shape[1], np.float64, chunk_rows=64, read_ahead=0)
    streamed = np.zeros((3, 5))
    for chunk in S.row_blocks(rows):
        streamed = S.combine_moments(streamed, S.block_moments(chunk))
    in_memory = np.zeros((3, 5))
    for lo in range(0, len(DATA), 64):
        in_memory = S.combine_moments(in_memory, S.block_moments(DATA[lo:lo + 64]))
    rows.close()
    assert np.array_equal(streamed, in_memory)
    n, mean, m2 = S.reduce_moments(in_memory, comm)  # one rank: the same numbers
    np.testing.assert_allclose(mean, DATA.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(m2 / n, DATA.var(axis=0), rtol=1e-13)


# ---- the transformers, one rank ------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value encountered in sqrt")  # sklearn's var_ -1e-43
def test_standard_scaler_equals_sklearn():
    X = DATA.copy()
    X[::9, 3] = np.nan  # missing values are ignored by the fit and kept by transform, as sklearn's
    for kw in ({}, {"with_mean": False}, {"with_std": False}):
        for weights in (None, WEIGHTS):
            ours = mpinn.StandardScaler(**kw).fit(X, sample_weight=weights)
            ref = sk_pre.StandardScaler(**kw).fit(X, sample_weight=weights)
            assert_same_attributes(ours, ref, [n for n in STANDARD if getattr(ref, n) is not None])
            # Column 2 has mean/std = 2e3: a last-bit difference in the mean (sklearn's is 6e-16
            # off the exact weighted mean, ours 3e-16) is 1e-12 after dividing by the std.
            np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-12, atol=1e-11)
            np.testing.assert_allclose(ours.inverse_transform(ours.transform(X)), X, rtol=1e-12)
    ours, ref = mpinn.StandardScaler(), sk_pre.StandardScaler()
    for part in np.array_split(np.arange(len(X)), 4):
        ours.partial_fit(X[part])
        ref.partial_fit(X[part])
    assert_same_attributes(ours, ref, STANDARD)


def test_minmax_scaler_equals_sklearn():
    for kw in ({}, {"feature_range": (-1, 2), "clip": True}):
        ours, ref = mpinn.MinMaxScaler(**kw).fit(DATA), sk_pre.MinMaxScaler(**kw).fit(DATA)
        assert_same_attributes(ours, ref, MINMAX)
        np.testing.assert_allclose(ours.transform(DATA * 2), ref.transform(DATA * 2), rtol=1e-12, atol=1e-12)
    f32 = DATA.astype(np.float32)
    assert_same_attributes(mpinn.MinMaxScaler().fit(f32), sk_pre.MinMaxScaler().fit(f32), MINMAX)
    with pytest.raises(ValueError, match="feature range must be smaller"):
        mpinn.MinMaxScaler(feature_range=(1, 0)).fit(DATA)


def test_sklearn_estimator_checks_pass():
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est in (mpinn.StandardScaler(), mpinn.MinMaxScaler()):
            failed = [r["check_name"] for r in check_estimator(est, on_fail=None) if r["status"] == "failed"]
            assert failed == []


def test_fit_an_hdf5_path_and_export_to_sklearn(tmp_path):
    write_hdf5(tmp_path / "d.h5", DATA, np.zeros(len(DATA), dtype=np.int64))
    ours = mpinn.StandardScaler().fit(tmp_path / "d.h5")
    assert_same_attributes(ours, sk_pre.StandardScaler().fit(DATA), STANDARD)
    sk = mpinn.MinMaxScaler().fit(str(tmp_path / "d.h5")).to_sklearn()
    assert type(sk) is sk_pre.MinMaxScaler
    np.testing.assert_array_equal(sk.transform(DATA), sk_pre.MinMaxScaler().fit(DATA).transform(DATA))
    with pytest.raises(ValueError, match="needs an array"):
        ours.transform(tmp_path / "d.h5")


def test_pipeline_equals_sklearns_pipeline():
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline

    X, y = iris_um()
    ours = fit_quietly(make_pipeline(mpinn.StandardScaler(), mpinn.MLPClassifier(**IRIS_MLP)), X, y)
    ref = fit_quietly(make_pipeline(sk_pre.StandardScaler(), MLPClassifier(**IRIS_MLP)), X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-10, atol=1e-12)


# ---- under mpiexec: N ranks == scikit-learn on all the rows ------------------------------------------


def _shared_tmpdir(comm):
    path = tempfile.mkdtemp() if comm.Get_rank() == 0 else None
    return comm.bcast(path, root=0)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("cls,names", [("StandardScaler", STANDARD), ("MinMaxScaler", MINMAX)])
def test_n_ranks_fit_what_sklearn_fits_on_all_rows(world, cls, names):
    ref = getattr(sk_pre, cls)().fit(DATA)
    rank, size = world.Get_rank(), world.Get_size()
    # Every rank passes the same arrays (as to mpinn's estimators), each its own rows, or a file.
    assert_same_attributes(getattr(mpinn, cls)(comm=world).fit(DATA), ref, names)
    own = np.array_split(DATA, size)[rank]
    assert_same_attributes(getattr(mpinn, cls)(comm=world, rows="local").fit(own), ref, names)
    tmp = _shared_tmpdir(world)
    if rank == 0:
        write_hdf5(os.path.join(tmp, "d.h5"), DATA, np.zeros(len(DATA), dtype=np.int64))
    world.Barrier()
    assert_same_attributes(getattr(mpinn, cls)(comm=world, shard="strided").fit(os.path.join(tmp, "d.h5")), ref, names)
    if cls == "StandardScaler":
        weighted = mpinn.StandardScaler(comm=world).fit(DATA, sample_weight=WEIGHTS)
        assert_same_attributes(weighted, sk_pre.StandardScaler().fit(DATA, sample_weight=WEIGHTS), names)


@pytest.mark.mpi(min_size=2)
def test_pipeline_on_n_ranks_equals_one_rank(world):
    from mpi4py import MPI
    from sklearn.pipeline import make_pipeline

    X, y = iris_um()
    many = fit_quietly(make_pipeline(mpinn.StandardScaler(comm=world), mpinn.MLPClassifier(**IRIS_MLP, comm=world)),
                       X, y)
    one = fit_quietly(make_pipeline(mpinn.StandardScaler(comm=MPI.COMM_SELF),
                                    mpinn.MLPClassifier(**IRIS_MLP, comm=MPI.COMM_SELF)), X, y)
    np.testing.assert_allclose(many[0].mean_, one[0].mean_, rtol=1e-14)
    np.testing.assert_allclose(many[0].scale_, one[0].scale_, rtol=1e-14)
    for a, b in zip(many[-1].coefs_ + many[-1].intercepts_, one[-1].coefs_ + one[-1].intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(many.predict_proba(X), one.predict_proba(X), rtol=1e-10, atol=1e-12)


# ---- `mpinn train --scale` -----------------------------------------------------------------------


def test_fit_scaler_on_some_rows_equals_sklearn_and_survives_a_checkpoint():
    from mpinn.preprocessing.training import fit_scaler, scaler_arrays, scaler_from_arrays

    comm = Comm(SerialComm())
    rows = RNG.permutation(len(DATA))[:200]  # the training rows, unsorted as a split gives them
    for kind, cls, names in (("standard", "StandardScaler", STANDARD), ("minmax", "MinMaxScaler", MINMAX)):
        ours = fit_scaler(kind, DATA, comm, rows)
        assert_same_attributes(ours, getattr(sk_pre, cls)().fit(DATA[rows]), names)
        back = scaler_from_arrays(scaler_arrays(ours))  # as a checkpoint's /state stores them
        assert type(back) is type(ours)
        assert_same_attributes(back, ours, names, rtol=0)
        np.testing.assert_array_equal(back.transform(DATA), ours.transform(DATA))
    assert fit_scaler("none", DATA, comm) is None and scaler_arrays(None) == {} and scaler_from_arrays({}) is None


def test_names_stay_importable_from_mpinn_preprocessing():
    """The statistics and `mpinn train --scale`'s functions have their own modules;
    mpinn.preprocessing still offers them (docs/api.md names mpinn.preprocessing.fit_scaler)."""
    import mpinn.options
    import mpinn.preprocessing as preprocessing
    from mpinn.preprocessing import training as scaler_train

    for name in ("block_moments", "combine_moments", "reduce_moments", "local_minmax", "row_blocks"):
        assert getattr(preprocessing, name) is getattr(S, name)
    assert preprocessing.SCALES is mpinn.options.SCALES
    for name in ("fit_scaler", "scale_problem", "apply_scaler", "scaler_kind", "scaler_arrays",
                 "scaler_from_arrays"):
        assert getattr(preprocessing, name) is getattr(scaler_train, name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        preprocessing.no_such_name


@pytest.fixture(scope="module")
def scaled_runs(tmp_path_factory):
    """Iris with petal length and width in micrometres (scales ~1 and ~1e4), trained with each
    --scale; the standard run on 1 and on 3 ranks."""
    from launch import run

    d = tmp_path_factory.mktemp("scaled")
    X, y, features, classes = load_iris()
    X[:, 2:] *= 1e4
    write_hdf5(d / "iris_um.h5", X, y, class_names=classes, feature_names=features)
    common = ["train", "--data", d / "iris_um.h5", "--test-fraction", "0.2", "--seed", "42", "--hidden", "10",
              "--lr", "0.01", "--quiet", "--json"]
    runs = {}
    for name, extra, n in (("standard", ["--epochs", "200"], 1), ("standard3", ["--epochs", "1"], 3),
                           ("none", ["--epochs", "200", "--scale", "none"], 2),
                           ("minmax32", ["--epochs", "100", "--scale", "minmax", "--dtype", "float32"], 2)):
        proc = run(common + extra + ["--checkpoint", d / name], np_=n)
        runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return d, X, runs


def _stored(checkpoint):
    with open(os.path.join(checkpoint, "latest")) as fh:
        path = os.path.join(checkpoint, fh.read().strip())
    with h5py.File(path, "r") as f:
        return {k: f[f"state/scaler/standard/{k}"][()] for k in f["state/scaler/standard"]}


def test_standard_scaling_trains_what_no_scaling_cannot(scaled_runs):
    d, X, runs = scaled_runs
    assert runs["standard"]["test_accuracy"] >= 0.9
    assert runs["none"]["test_accuracy"] <= 0.5  # the micrometre features swamp the others


def test_statistics_are_the_training_rows_on_any_rank_count(scaled_runs):
    from mpinn.data.schedule import train_test_split_indices

    d, X, runs = scaled_runs
    one, three = _stored(d / "standard"), _stored(d / "standard3")
    for name in one:
        np.testing.assert_allclose(three[name], one[name], rtol=1e-14, atol=0)
    train, _ = train_test_split_indices(len(X), 0.2, 42)  # the held-out rows do not count
    ref = sk_pre.StandardScaler().fit(X[train])
    np.testing.assert_allclose(one["mean_"], ref.mean_, rtol=1e-14)
    np.testing.assert_allclose(one["scale_"], ref.scale_, rtol=1e-14)


@pytest.mark.parametrize("name,onnx_tol", [("standard", 1e-12), ("minmax32", 1e-6)])
def test_predict_load_sklearn_and_onnx_agree(scaled_runs, tmp_path, name, onnx_tol):
    from launch import run
    from mpinn.estimators.export import to_onnx

    d, X, runs = scaled_runs
    ck = d / name
    run(["predict", "--model", ck, "--data", d / "iris_um.h5", "--out", tmp_path / "p.h5"], np_=2)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        cli_labels, cli_proba = f["y_pred"].asstr()[()], f["proba"][()]
    model = mpinn.load(ck)
    tol = 1e-12 if name == "standard" else 1e-6  # float32 weights: the CLI computes in float32 too
    np.testing.assert_allclose(model.predict_proba(X), cli_proba, rtol=0, atol=tol)
    assert (model.predict(X) == cli_labels).all()
    pipe = model.to_sklearn()  # what `mpinn export --format sklearn` saves (test_tools.py runs it)
    assert [type(s).__name__ for s in pipe] == [type(model.scaler_).__name__, "MLPClassifier"]
    np.testing.assert_allclose(pipe.predict_proba(X), model.predict_proba(X), rtol=0, atol=tol)
    assert (pipe.predict(X) == cli_labels).all()
    ort = pytest.importorskip("onnxruntime")
    to_onnx(model, tmp_path / "m.onnx")  # what `mpinn export --format onnx` writes
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    dtype = model.coefs_[0].dtype
    proba, labels = session.run(["output", "label"], {"input": X.astype(dtype)})
    np.testing.assert_allclose(proba, cli_proba, rtol=0, atol=onnx_tol)
    assert (labels == cli_labels).all()


def test_early_stopping_rows_count_and_a_resumed_run_keeps_its_statistics(scaled_runs, tmp_path):
    """--early-stopping's validation rows are training rows of the scaler (as in scikit-learn's
    Pipeline(StandardScaler(), MLPClassifier(early_stopping=True))); --resume applies the
    checkpoint's statistics, even to another --data file."""
    from launch import run

    d, X, _ = scaled_runs
    common = ["train", "--hidden", "4", "--quiet", "--checkpoint"]
    run(common + [tmp_path / "es", "--data", d / "iris_um.h5", "--epochs", "2", "--early-stopping"], np_=2)
    ref = sk_pre.StandardScaler().fit(X)
    for name, value in _stored(tmp_path / "es").items():
        np.testing.assert_allclose(value, getattr(ref, name), rtol=1e-14)
    write_hdf5(tmp_path / "doubled.h5", 2 * X, load_iris()[1])
    run(common + [tmp_path / "es", "--data", tmp_path / "doubled.h5", "--epochs", "3", "--early-stopping", "--resume"],
        np_=3)
    for name, value in _stored(tmp_path / "es").items():
        np.testing.assert_allclose(value, getattr(ref, name), rtol=1e-14)
