"""The bad-input corpus: each case gives one line naming the problem, exit code 2 on every
rank, no traceback, no hang, and leaves existing files exactly as they were."""

import hashlib
import os
import shutil

import h5py
import numpy as np
import pytest

from launch import run
from mpinn.train.config import TrainConfig
from mpinn.errors import InputError

TRAIN = ["--hidden", "8", "--epochs", "3", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    run(["data", "iris", d / "iris.h5"])
    with h5py.File(d / "iris.h5", "r") as f:
        X, y = f["X"][()], f["y"][()]

    def h5(name, **datasets):
        with h5py.File(d / name, "w") as f:
            for key, value in datasets.items():
                f[key] = value

    (d / "text.h5").write_text("not hdf5\n")
    h5("labels.h5", X=X, labels=y)
    h5("x1d.h5", X=X[:, 0], y=y)
    h5("short_y.h5", X=X, y=y[:-1])
    h5("xstr.h5", X=np.array([[b"a", b"b"]] * 4), y=np.arange(4) % 2)
    nan = X.copy()
    nan[-1, 2] = np.nan  # the last rows live on the last rank only
    h5("nan.h5", X=nan, y=y)
    (d / "grid.toml").write_text("lr = [0.1]\n")
    inf = X.copy()
    inf[-2, 0] = np.inf
    h5("inf.h5", X=inf, y=y)
    h5("frac.h5", X=X, y=y + 0.5)
    ynan = y.astype(float)
    ynan[-1] = np.nan
    h5("ynan.h5", X=X, y=ynan)
    h5("empty.h5", X=np.zeros((0, 4)), y=np.zeros(0))
    h5("one.h5", X=X[:1], y=y[:1])
    h5("three_features.h5", X=X[:, :3], y=y)
    # A good checkpoint, then damaged copies of it.
    run(["train", "--data", d / "iris.h5", *TRAIN, "--checkpoint", d / "ck"])
    good = d / "ck" / open(d / "ck" / "latest").read().strip()
    shutil.copy(good, d / "truncated.h5")
    with open(d / "truncated.h5", "r+b") as fh:
        fh.truncate(os.path.getsize(good) // 2)
    shutil.copy(good, d / "flipped.h5")
    with h5py.File(d / "flipped.h5", "r") as f:
        offset = f["state/params"].id.get_offset()
    with open(d / "flipped.h5", "r+b") as fh:
        fh.seek(offset + 3)
        byte = fh.read(1)
        fh.seek(offset + 3)
        fh.write(bytes([byte[0] ^ 0x10]))
    (d / "hostile").mkdir()
    (d / "hostile" / "latest").write_text("../../etc/passwd\n")
    return d


D = "{d}"
CASES = [
    ("missing file", ["train", "--data", "missing.h5"], "data file not found: missing.h5"),
    ("not hdf5", ["train", "--data", f"{D}/text.h5"], "not an HDF5 file"),
    ("missing dataset", ["train", "--data", f"{D}/labels.h5"], "no dataset 'y' (datasets in file: X, labels)"),
    ("X not 2-D", ["train", "--data", f"{D}/x1d.h5"], "'X' must be 2-D"),
    ("y length", ["train", "--data", f"{D}/short_y.h5"], "'y' has 149 rows but 'X' has 150"),
    ("non-numeric", ["train", "--data", f"{D}/xstr.h5"], "'X' has non-numeric dtype"),
    ("NaN features", ["train", "--data", f"{D}/nan.h5"], "features contain NaN or Inf (row 149)"),
    ("Inf features", ["train", "--data", f"{D}/inf.h5"], "features contain NaN or Inf (row 148)"),
    ("fractional labels", ["train", "--data", f"{D}/frac.h5", "--task", "classify"],
     "classification labels must be integers"),
    ("NaN targets", ["train", "--data", f"{D}/ynan.h5", "--task", "regress"], "regression targets contain NaN"),
    ("empty", ["train", "--data", f"{D}/empty.h5"], "'X' is empty"),
    ("fewer rows than ranks", ["train", "--data", f"{D}/one.h5"], "1 rows is fewer than the 2 ranks"),
    ("batch size", ["train", "--data", f"{D}/iris.h5", "--batch-size", "0"], "--batch-size: must be >= 1"),
    ("negative lr", ["train", "--data", f"{D}/iris.h5", "--lr", "-0.1"], "--lr: must be > 0"),
    ("negative alpha", ["train", "--data", f"{D}/iris.h5", "--alpha", "-1"], "--alpha: must be >= 0"),
    ("momentum", ["train", "--data", f"{D}/iris.h5", "--momentum", "1.2"], "--momentum: must be in [0, 1]"),
    ("activation", ["train", "--data", f"{D}/iris.h5", "--activation", "gelu"], "--activation: choose from"),
    ("solver", ["train", "--data", f"{D}/iris.h5", "--solver", "rmsprop"], "--solver: choose from"),
    ("hidden", ["train", "--data", f"{D}/iris.h5", "--hidden", "10,,5"], "--hidden: expected comma-separated"),
    ("hidden zero", ["train", "--data", f"{D}/iris.h5", "--hidden", "0"], "--hidden: layer sizes must be >= 1"),
    ("shard weights", ["train", "--data", f"{D}/iris.h5", "--shard", "weighted:1,-1"], "--shard: weights must be"),
    ("shard count", ["train", "--data", f"{D}/iris.h5", "--shard", "weighted:1,1,1"], "3 weights given for 2 ranks"),
    ("test features", ["train", "--data", f"{D}/iris.h5", "--test-data", f"{D}/three_features.h5"],
     "3 features but training data"),
    ("not a checkpoint", ["eval", "--model", f"{D}/iris.h5", "--data", f"{D}/iris.h5"], "not an mpinn checkpoint"),
    ("truncated checkpoint", ["eval", "--model", f"{D}/truncated.h5", "--data", f"{D}/iris.h5"], "truncated.h5"),
    ("damaged checkpoint", ["eval", "--model", f"{D}/flipped.h5", "--data", f"{D}/iris.h5"], "checksum mismatch"),
    ("hostile pointer", ["eval", "--model", f"{D}/hostile", "--data", f"{D}/iris.h5"], "does not name a checkpoint"),
    ("checkpoint features", ["eval", "--model", f"{D}/ck", "--data", f"{D}/three_features.h5"],
     "3 features but the model expects 4"),
    ("resume architecture", ["train", "--data", f"{D}/iris.h5", "--hidden", "5", "--epochs", "3",
                             "--checkpoint", f"{D}/ck", "--resume"], "was trained with --hidden [8] (now [5])"),
    ("resume features", ["train", "--data", f"{D}/three_features.h5", "--hidden", "8", "--epochs", "3",
                         "--checkpoint", f"{D}/ck", "--resume"], "has layers [4, 8, 3]"),
    ("checkpoint dir", ["train", "--data", f"{D}/iris.h5", "--checkpoint", "/proc/mpinn"], "is not writable"),
    ("predictions to a directory", ["predict", "--model", f"{D}/ck", "--data", f"{D}/iris.h5", "--out", f"{D}"],
     "is a directory; give a file name"),
    ("resume without dir", ["train", "--data", f"{D}/iris.h5", "--resume"], "--resume needs --checkpoint"),
    # Each rank checks its block of the rows; the last row lives on the last rank.
    ("NaN features, search", ["search", "--data", f"{D}/nan.h5", "--grid", f"{D}/grid.toml", "--results", "r.csv"],
     "features contain NaN or Inf (row 149)"),
]


def _snapshot(directory):
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            out[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("what,args,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(corpus, tmp_path, what, args, message, n):
    if what == "fewer rows than ranks":
        message = message.replace("2 ranks", f"{n} ranks")
    if what == "shard count" and n == 3:
        args = [a.replace("1,1,1", "1,1") for a in args]
        message = "2 weights given for 3 ranks"
    args = [a.replace(D, str(corpus)) for a in args]
    (tmp_path / "metrics.jsonl").write_text("precious\n")
    if args[0] == "train":
        args = args + (["--metrics", tmp_path / "metrics.jsonl"] if "--resume" not in args else [])
        args = args + ([] if "--hidden" in args else ["--hidden", "8"])
    before = _snapshot(corpus)
    proc = run(args, np_=n, check=False, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpinn: error: "), proc.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _snapshot(corpus) == before
    assert (tmp_path / "metrics.jsonl").read_text() == "precious\n"


def test_unknown_config_keys_are_named():
    with pytest.raises(InputError, match="unknown config keys: bogus, lr_rate"):
        TrainConfig.from_dict({"lr_rate": 0.1, "bogus": 1, "epochs": 3})
