"""Class names everywhere: a model trained on a file with class names (iris, `data convert` of
string labels) gives those names back from mpinn.load(), to_sklearn() and the ONNX export, the
same labels `mpinn predict` writes, with the probability columns in classes_ order."""

import h5py
import numpy as np
import pytest

import mpinn
from launch import run
from mpinn.data.builtin import load_iris, write_hdf5

X_IRIS, Y_IRIS, FEATURES, NAMES = load_iris()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """name -> (checkpoint, X, CLI predicted labels, CLI probabilities): iris with its names,
    iris with names whose codes are not in sorted order, and a binary file whose names are
    reversed (code 0 'yes', 1 'no')."""
    d = tmp_path_factory.mktemp("names")
    binary = (Y_IRIS == 0).astype(np.int64)
    files = {"iris": (Y_IRIS, NAMES), "unsorted": (Y_IRIS, ["zebra", "ant", "bee"]), "binary": (binary, ["yes", "no"])}
    out = {}
    for name, (y, names) in files.items():
        write_hdf5(d / f"{name}.h5", X_IRIS, y, class_names=names, feature_names=FEATURES)
        run(["train", "--data", d / f"{name}.h5", "--hidden", "6", "--epochs", "30", "--lr", "0.01", "--quiet",
             "--checkpoint", d / name], np_=2 if name == "iris" else 1)
        run(["predict", "--model", d / name, "--data", d / f"{name}.h5", "--out", d / f"{name}-pred.h5"])
        with h5py.File(d / f"{name}-pred.h5", "r") as f:
            out[name] = (d / name, f["y_pred"].asstr()[()], f["proba"][()], names)
    return out


@pytest.mark.parametrize("name", ["iris", "unsorted", "binary"])
def test_load_gives_the_names_predict_writes(trained, name):
    ck, labels, proba, names = trained[name]
    model = mpinn.load(ck)
    assert model.classes_.tolist() == sorted(names)  # sorted, as scikit-learn's classes_
    assert (model.predict(X_IRIS) == labels).all()
    # predict writes columns in code order; classes_ orders them by name.
    columns = np.argsort(names, kind="stable")
    np.testing.assert_allclose(model.predict_proba(X_IRIS), proba[:, columns], rtol=0, atol=1e-15)
    assert model.score(X_IRIS, labels) == 1.0


@pytest.mark.parametrize("name", ["iris", "unsorted", "binary"])
def test_to_sklearn_predicts_the_names(trained, name):
    pytest.importorskip("sklearn")
    ck, labels, _, names = trained[name]
    model = mpinn.load(ck)
    sk = model.to_sklearn()
    assert sk.classes_.tolist() == sorted(names)
    assert (sk.predict(X_IRIS) == labels).all()
    np.testing.assert_allclose(sk.predict_proba(X_IRIS), model.predict_proba(X_IRIS), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["iris", "binary"])
def test_onnx_export_has_a_label_output(trained, name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from mpinn.estimators.export import to_onnx

    ck, labels, _, _ = trained[name]
    model = mpinn.load(ck)
    to_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output", "label"]
    proba, onnx_labels = session.run(None, {"input": X_IRIS})
    assert (onnx_labels == labels).all()
    np.testing.assert_allclose(proba, model.predict_proba(X_IRIS), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["unsorted", "binary"])
def test_optimizer_state_moves_with_the_output_units(trained, name):
    """Names whose codes are not in sorted order reorder (or, binary, negate) the output layer;
    adam's first moment moves with it (and changes sign), the second moment only moves, so
    partial_fit continues the same optimization."""
    from mpinn.train.checkpoint import read_checkpoint
    from mpinn.nn.model import MLP

    ck, _, _, names = trained[name]
    model = mpinn.load(ck)
    attrs, arrays = read_checkpoint(ck)
    mlp = MLP(attrs["model"]["layer_sizes"], "relu", attrs["model"]["output"])
    last = {k: mlp.views(arrays[k])[-1] for k in ("params", "optimizer/m", "optimizer/v")}
    new = {"params": mlp.views(model._flat(mlp))[-1], "optimizer/m": mlp.views(model._optimizer.m)[-1],
           "optimizer/v": mlp.views(model._optimizer.v)[-1]}
    order = np.argsort(names)
    for key, sign in (("params", -1), ("optimizer/m", -1), ("optimizer/v", 1)):
        for old, moved in zip(last[key], new[key]):
            expected = old[..., order] if name == "unsorted" else (sign * old)
            np.testing.assert_array_equal(moved, expected)
    before = model.coefs_[-1].copy()
    model.partial_fit(X_IRIS, np.asarray(names)[Y_IRIS if name == "unsorted" else (Y_IRIS == 0).astype(int)])
    assert not np.array_equal(model.coefs_[-1], before) and set(model.predict(X_IRIS)) <= set(names)
