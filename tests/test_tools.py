"""The tools around training: plots, exports, data info/split/digits, CSV with string labels."""

import struct

import h5py
import numpy as np
import pytest

import mpinn
from launch import run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    run(["data", "iris", d / "iris.h5"])
    run(["train", "--data", d / "iris.h5", "--test-fraction", "0.2", "--hidden", "8", "--lr", "0.01",
         "--epochs", "40", "--quiet", "--checkpoint", d / "ck", "--metrics", d / "m.jsonl"], np_=2)
    with h5py.File(d / "iris.h5", "r") as f:
        X = f["X"][()]
    return d, X, mpinn.load(d / "ck")


def _png_size(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height, len(data)


def test_plot_writes_a_png_of_the_curves(trained, tmp_path):
    d, _, _ = trained
    run(["plot", d / "m.jsonl", "-o", tmp_path / "curves.png"])
    width, height, size = _png_size(tmp_path / "curves.png")
    assert 400 <= width <= 2000 and 400 <= height <= 3000 and size > 10_000


def test_eval_plots_the_confusion_matrix(trained, tmp_path):
    d, _, _ = trained
    run(["eval", "--model", d / "ck", "--data", d / "iris.h5", "--plot", tmp_path / "cm.png"], np_=2)
    width, height, size = _png_size(tmp_path / "cm.png")
    assert width >= 200 and height >= 200 and size > 5_000


def test_export_npz_onnx_sklearn_predict_the_same(trained, tmp_path):
    d, X, model = trained
    proba = model.predict_proba(X)
    run(["export", d / "ck", "--format", "npz", "-o", tmp_path / "m.npz"])
    z = np.load(tmp_path / "m.npz", allow_pickle=False)
    assert str(z["scaler"]) == "standard"  # the default --scale
    a = (X - z["scaler_mean"]) / z["scaler_scale"]
    for i in range(2):
        a = a @ z[f"W{i}"] + z[f"b{i}"]
        if i == 0:
            a = np.maximum(a, 0)
    e = np.exp(a - a.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), proba, rtol=1e-12)
    assert z["classes"].tolist() == ["setosa", "versicolor", "virginica"] and str(z["activation"]) == "relu"

    ort = pytest.importorskip("onnxruntime")
    run(["export", d / "ck", "--format", "onnx", "-o", tmp_path / "m.onnx"])
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    onnx_proba, onnx_label = session.run(["output", "label"], {"input": X})
    np.testing.assert_allclose(onnx_proba, proba, rtol=1e-9, atol=1e-12)
    assert (onnx_label == model.predict(X)).all()

    joblib = pytest.importorskip("joblib")
    run(["export", d / "ck", "--format", "sklearn", "-o", tmp_path / "m.joblib"])
    sk = joblib.load(tmp_path / "m.joblib")  # written by this test from its own checkpoint
    np.testing.assert_allclose(sk.predict_proba(X), proba, rtol=1e-12)


def test_data_info_split_digits(tmp_path):
    run(["data", "iris", tmp_path / "iris.h5"])
    out = run(["data", "info", tmp_path / "iris.h5", "--json"]).stdout
    import json

    info = json.loads(out)
    assert info["rows"] == 150 and info["classes"] == {"setosa": 50, "versicolor": 50, "virginica": 50}
    run(["data", "split", tmp_path / "iris.h5", tmp_path / "tr.h5", tmp_path / "te.h5", "--seed", "3"])
    with h5py.File(tmp_path / "tr.h5", "r") as tr, h5py.File(tmp_path / "te.h5", "r") as te:
        assert np.bincount(te["y"][()]).tolist() == [10, 10, 10]  # stratified
        assert len(tr["y"]) == 120
        rows = np.concatenate([tr["X"][()], te["X"][()]])
    with h5py.File(tmp_path / "iris.h5", "r") as f:
        assert sorted(map(tuple, rows)) == sorted(map(tuple, f["X"][()]))
    pytest.importorskip("sklearn")
    run(["data", "digits", tmp_path / "digits.h5"])
    info = json.loads(run(["data", "info", tmp_path / "digits.h5", "--json"]).stdout)
    assert info["rows"] == 1797 and info["features"] == 64 and len(info["classes"]) == 10


def test_csv_with_string_labels_trains_and_predicts_strings(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 3))
    names = np.array(["cat", "dog", "eel"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)]
    with open(tmp_path / "animals.csv", "w") as fh:
        fh.write("weight,height,age,species\n")
        for row, name in zip(X, names):
            fh.write(",".join(f"{v:.6f}" for v in row) + f",{name}\n")
    run(["data", "convert", tmp_path / "animals.csv", tmp_path / "animals.h5", "--label-column", "species",
         "--chunk-rows", "64"])
    run(["train", "--data", tmp_path / "animals.h5", "--hidden", "16", "--lr", "0.01", "--epochs", "150",
         "--quiet", "--checkpoint", tmp_path / "ck"], np_=2)
    run(["predict", "--model", tmp_path / "ck", "--data", tmp_path / "animals.h5", "--out", tmp_path / "p.h5"], np_=2)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        predicted = f["y_pred"].asstr()[()]
    assert set(predicted) <= {"cat", "dog", "eel"}
    assert np.mean(predicted == names) > 0.85
