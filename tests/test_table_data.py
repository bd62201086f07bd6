"""A data scientist's own table: a pandas DataFrame with a text column, booleans (as
get_dummies writes them), missing values and an index, saved as CSV or Parquet, converted,
trained on 2 ranks and predicted on by the CLI, by `mpinn.load(...).predict(df)` and by the
scikit-learn export, with its columns in another order too; names that differ are refused.
And: --no-label files, the task stored by `convert --task`, the many-classes warning, a
checkpoint written before models kept feature names.
"""

import json
import os

import h5py
import numpy as np
import pytest

import mpinn
from launch import clean_env, run
from mpinn.data.columns import encode_table, plan_columns
from mpinn.errors import InputError

pd = pytest.importorskip("pandas")
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def wine(n=80, seed=0):
    """Numbers, a text column with 2 missing values, a boolean, get_dummies' True/False columns,
    a text label that depends on them."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east"], size=n).astype(object)
    region[[4, 11]] = np.nan
    df = pd.DataFrame({"alcohol": rng.normal(12, 1, n).round(2), "region": region,
                       "organic": rng.random(n) < 0.4})
    df = pd.concat([df, pd.get_dummies(pd.Series(rng.choice(["merlot", "syrah"], n), name="grape"),
                                       prefix="grape")], axis=1)
    df["quality"] = np.where(df["alcohol"] + 0.8 * df["organic"] > 12.2, "good", "plain")
    return df


def expected_X(df):
    """The features convert should write, built here with pandas: rows without a missing value,
    each column in place, region one-hot in sorted category order, booleans as 0/1."""
    kept = df.dropna()
    parts = []
    for col in kept.columns.drop("quality"):
        if col == "region":
            parts += [(kept[col] == c).astype(float).to_numpy() for c in sorted(kept[col].unique())]
        else:
            parts.append(kept[col].astype(float).to_numpy())
    return np.column_stack(parts)


def save(df, path):
    if str(path).endswith(".csv"):
        df.to_csv(path)  # the default index: an unnamed first column
    else:
        df.to_parquet(path)
    return path


def proba_file(path):
    with h5py.File(path) as f:
        return f["proba"][()]


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_a_dataframe_converts_trains_on_2_ranks_and_predicts_alike(tmp_path, ext):
    df = wine()
    src = save(df, tmp_path / f"wine{ext}")
    out = run(["data", "convert", src, tmp_path / "wine.h5", "--na", "drop"], cwd=tmp_path).stdout
    assert "column 'region' is categorical: 3 categories" in out
    with h5py.File(tmp_path / "wine.h5") as f:
        X, names = f["X"][()], json.loads(f.attrs["feature_names"])
        encoding = json.loads(f.attrs["encoding"])
    np.testing.assert_array_equal(X, expected_X(df))
    assert names == ["alcohol", "region=east", "region=north", "region=south", "organic", "grape_merlot",
                     "grape_syrah"]
    assert encoding == {"input_columns": ["alcohol", "region", "organic", "grape_merlot", "grape_syrah"],
                        "categories": {"region": ["east", "north", "south"]}, "unknown_category": "error"}

    run(["train", "--data", tmp_path / "wine.h5", "--hidden", "6", "--epochs", "5", "--seed", "2",
         "--checkpoint", tmp_path / "ck", "--quiet"], np_=2)

    # Rows to predict on: no label, the columns reversed, converted on their own.
    rows = df.dropna().drop(columns="quality")
    reversed_rows = rows[rows.columns[::-1]]
    save(reversed_rows, tmp_path / f"new{ext}")
    run(["data", "convert", tmp_path / f"new{ext}", tmp_path / "new.h5", "--no-label"], cwd=tmp_path)
    run(["predict", "--model", tmp_path / "ck", "--data", tmp_path / "new.h5", "--out", tmp_path / "p.h5"], np_=2)
    cli = proba_file(tmp_path / "p.h5")

    model = mpinn.load(tmp_path / "ck")
    assert list(model.feature_names_in_) == encoding["input_columns"]
    run(["export", tmp_path / "ck", "--format", "sklearn", "-o", tmp_path / "m.joblib"])
    import joblib

    exported = joblib.load(tmp_path / "m.joblib")
    # The independent reference: the network's layers in numpy on the expected encoding.
    h = np.maximum(0, (X - model.scaler_.mean_) / model.scaler_.scale_ @ model.coefs_[0] + model.intercepts_[0])
    z = h @ model.coefs_[1] + model.intercepts_[1]
    reference = np.column_stack([1 - 1 / (1 + np.exp(-z[:, 0])), 1 / (1 + np.exp(-z[:, 0]))])
    for got in (cli, model.predict_proba(rows), model.predict_proba(reversed_rows),
                exported.predict_proba(rows), exported.predict_proba(reversed_rows)):
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12)
    assert (exported.predict(reversed_rows) == model.predict(rows)).all()

    # Other names: one line and exit 2 from the CLI, a ValueError from the API.
    renamed = rows.rename(columns={"alcohol": "abv"})
    save(renamed, tmp_path / f"renamed{ext}")
    run(["data", "convert", tmp_path / f"renamed{ext}", tmp_path / "renamed.h5", "--no-label"], cwd=tmp_path)
    proc = run(["predict", "--model", tmp_path / "ck", "--data", tmp_path / "renamed.h5", "--out",
                tmp_path / "q.h5"], np_=2, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"mpinn: error: {tmp_path / 'renamed.h5'}: feature names differ from the model's "
                     "(missing 'alcohol'; unexpected 'abv')"], proc.stderr
    assert not (tmp_path / "q.h5").exists()
    with pytest.raises(ValueError, match="feature names differ from the model's"):
        model.predict(renamed)


def test_unseen_category_is_an_error_or_zeros_as_chosen(tmp_path):
    df = wine().dropna()
    new = df.drop(columns="quality").head(5).copy()
    new.iloc[2, new.columns.get_loc("region")] = "west"
    save(new, tmp_path / "new.csv")
    run(["data", "convert", tmp_path / "new.csv", tmp_path / "new.h5", "--no-label"])
    save(df, tmp_path / "wine.csv")
    for policy in ("error", "zeros"):
        run(["data", "convert", tmp_path / "wine.csv", tmp_path / f"{policy}.h5", "--unknown-category", policy])
        run(["train", "--data", tmp_path / f"{policy}.h5", "--hidden", "4", "--epochs", "2",
             "--checkpoint", tmp_path / policy, "--quiet"])
    from mpinn.data.convert import info, split

    split(tmp_path / "zeros.h5", tmp_path / "a.h5", tmp_path / "b.h5")  # both halves keep the encoding
    for half in ("a.h5", "b.h5"):
        with h5py.File(tmp_path / half) as f:
            assert json.loads(f.attrs["encoding"])["unknown_category"] == "zeros"
    assert info(tmp_path / "a.h5")["categorical"] == {"region": 3}
    proc = run(["predict", "--model", tmp_path / "error", "--data", tmp_path / "new.h5", "--out",
                tmp_path / "p.h5"], np_=2, check=False)
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"mpinn: error: {tmp_path / 'new.h5'}: row 2 has category 'west' in column 'region', which the model "
        "never saw (convert the training data with --unknown-category zeros to encode it as all zeros)"]
    with pytest.raises(ValueError, match="category 'west'"):
        mpinn.load(tmp_path / "error").predict(new)

    run(["predict", "--model", tmp_path / "zeros", "--data", tmp_path / "new.h5", "--out", tmp_path / "p.h5"])
    zeros = mpinn.load(tmp_path / "zeros")
    encoded = encode_table(new, list(zeros.feature_names_in_), zeros.encoding_["categories"], "zeros")
    assert encoded[2, 1:4].tolist() == [0, 0, 0] and encoded[[0, 1, 3, 4], 1:4].sum(axis=1).tolist() == [1] * 4
    np.testing.assert_allclose(proba_file(tmp_path / "p.h5"), zeros.predict_proba(encoded), rtol=0, atol=1e-12)
    np.testing.assert_allclose(zeros.predict_proba(new), zeros.predict_proba(encoded), rtol=0, atol=0)


def test_no_label_rows_stored_task_and_the_many_classes_warning(tmp_path):
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True)
    frame = bunch.frame  # ten features and 'target', integral-valued: 214 distinct values
    frame.to_csv(tmp_path / "diabetes.csv", index=False)
    run(["data", "convert", tmp_path / "diabetes.csv", tmp_path / "auto.h5"])
    proc = run(["train", "--data", tmp_path / "auto.h5", "--hidden", "4", "--epochs", "1", "--quiet"], np_=2)
    warning = (f"mpinn: warning: {tmp_path / 'auto.h5'}: --task auto chose classification with "
               f"{frame['target'].nunique()} classes for 442 rows")
    assert proc.stderr.count(warning) == 1, proc.stderr

    run(["data", "convert", tmp_path / "diabetes.csv", tmp_path / "reg.h5", "--task", "regress"])
    with h5py.File(tmp_path / "reg.h5") as f:
        assert f.attrs["task"] == "regress"
    proc = run(["train", "--data", tmp_path / "reg.h5", "--hidden", "4", "--epochs", "1", "--test-fraction",
                "0.2", "--checkpoint", tmp_path / "ck"], np_=2)
    assert "regress (auto: the data file says regress" in proc.stdout and "warning" not in proc.stderr
    model = mpinn.load(tmp_path / "ck")
    assert type(model).__name__ == "MLPRegressor"

    # Rows without a label: every column a feature, no y; predicted by the regressor.
    frame.drop(columns="target").to_csv(tmp_path / "rows.csv", index=False)
    out = run(["data", "convert", tmp_path / "rows.csv", tmp_path / "rows.h5", "--no-label"]).stdout
    assert '"labels": "none"' in out
    with h5py.File(tmp_path / "rows.h5") as f:
        assert "y" not in f and f["X"].shape == (442, 10)
    report = json.loads(run(["data", "info", tmp_path / "rows.h5", "--json"]).stdout)
    assert report["labels"] == "none" and report["rows"] == 442 and "y" not in report
    run(["predict", "--model", tmp_path / "ck", "--data", tmp_path / "rows.h5", "--out", tmp_path / "p.h5"], np_=2)
    with h5py.File(tmp_path / "p.h5") as f:
        np.testing.assert_allclose(f["y_pred"][()], model.predict(bunch.data), rtol=0, atol=1e-12)

    run(["data", "diabetes", tmp_path / "builtin.h5"])  # the built-in set says regress itself
    with h5py.File(tmp_path / "builtin.h5") as f:
        assert f.attrs["task"] == "regress"


def test_a_pandas_index_of_any_values_is_dropped(tmp_path):
    df = wine().dropna()
    subset = df.iloc[[9, 3, 40, 17, 22, 5, 31, 60]]
    subset.to_csv(tmp_path / "subset.csv")
    out = run(["data", "convert", tmp_path / "subset.csv", tmp_path / "s.h5"]).stdout
    assert "the first column has no name (" in out and "read as the index pandas writes, and dropped" in out
    with h5py.File(tmp_path / "s.h5") as f:
        assert json.loads(f.attrs["feature_names"])[0] == "alcohol"
        np.testing.assert_array_equal(f["X"][:, 0], subset["alcohol"].to_numpy())


def test_a_checkpoint_without_feature_names_still_loads_and_predicts(iris, tmp_path):
    """Written by mpinn before models kept feature names (tests/fixtures, 3 epochs on iris)."""
    old = os.path.join(FIXTURES, "iris_ckpt_without_feature_names.h5")
    model = mpinn.load(old)
    assert not hasattr(model, "feature_names_in_")
    with h5py.File(iris) as f:
        X = f["X"][()]
    run(["predict", "--model", old, "--data", iris, "--out", tmp_path / "p.h5"], np_=2)  # iris.h5 names its columns
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])  # names the model never had: by position, as before
    sk = model.to_sklearn()
    reference = sk.predict_proba(X)
    for got in (proba_file(tmp_path / "p.h5"), model.predict_proba(X), model.predict_proba(frame)):
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12)


def test_an_estimator_fitted_on_a_dataframe_keeps_its_names(tmp_path):
    df = wine().dropna()
    X = df[["alcohol", "organic", "grape_merlot"]]
    est = mpinn.MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, df["quality"])
    assert list(est.feature_names_in_) == ["alcohol", "organic", "grape_merlot"]
    np.testing.assert_array_equal(est.predict_proba(X[X.columns[::-1]]), est.predict_proba(X.to_numpy(float)))
    with pytest.raises(ValueError, match="missing 'organic'"):
        est.predict(X.rename(columns={"organic": "bio"}))
    sk = est.to_sklearn(by_name=True)  # scikit-learn's ColumnTransformer takes the columns by name
    np.testing.assert_allclose(sk.predict_proba(X[X.columns[::-1]]), est.predict_proba(X), rtol=0, atol=1e-12)
    est.fit(X.to_numpy(float), df["quality"])  # refitted on an array: no names any more
    assert not hasattr(est, "feature_names_in_")


def test_column_plans():
    enc = {"categories": {"r": ["a", "b"]}, "unknown_category": "error"}
    want = ["x", "r=a", "r=b", "y"]
    plan = plan_columns(want, enc, ["y", "r=b", "x"], {"categories": {"r": ["b"]}}, "f.h5")
    np.testing.assert_array_equal(plan.apply(np.array([[1.0, 1.0, 3.0]])), [[3.0, 0.0, 1.0, 1.0]])
    assert plan_columns(want, enc, None, None, "f.h5") is None  # unnamed: by position
    assert plan_columns(want, enc, want, enc, "f.h5").identity
    plan = plan_columns(want, enc, ["x", "r=a", "r=c", "y"], {"categories": {"r": ["a", "c"]}}, "f.h5")
    assert plan.unseen_problem(np.array([[0, 1, 0, 0]]), ["x", "r=a", "r=c", "y"], "f.h5") is None
    assert "row 1 has category 'c' in column 'r'" in plan.unseen_problem(
        np.array([[0, 1, 0, 0], [0, 0, 1, 0]]), ["x", "r=a", "r=c", "y"], "f.h5")
    with pytest.raises(InputError, match=r"^f.h5: feature names differ from the model's \(missing 'y'; unexpected 'z'\)$"):
        plan_columns(want, enc, ["x", "r=a", "r=b", "z"], enc, "f.h5")


def test_parquet_without_pyarrow_names_the_extra(tmp_path):
    wine().to_parquet(tmp_path / "w.parquet")
    (tmp_path / "shadow" / "pyarrow").mkdir(parents=True)
    (tmp_path / "shadow" / "pyarrow" / "__init__.py").write_text("raise ImportError('no pyarrow here')\n")
    proc = run(["data", "convert", tmp_path / "w.parquet", tmp_path / "w.h5"], check=False,
               env=clean_env(PYTHONPATH=tmp_path / "shadow"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("mpinn: error: data convert: reading Parquet needs pyarrow: "
                                   "pip install 'mpinn[parquet]'")


def test_train_test_data_takes_its_columns_by_name(tmp_path):
    """`train --test-data` matches the test file's columns to the training file's by name, as eval
    and predict do: the same test metrics with the columns reversed; other names are refused."""
    df = wine(120, seed=3).dropna()
    train, test = df.iloc[:80], df.iloc[80:]
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    test[test.columns[::-1]].to_csv(tmp_path / "reversed.csv", index=False)
    test.rename(columns={"alcohol": "abv"}).to_csv(tmp_path / "renamed.csv", index=False)
    for name in ("train", "test", "reversed", "renamed"):
        run(["data", "convert", tmp_path / f"{name}.csv", tmp_path / f"{name}.h5", "--label", "quality"])
    args = ["train", "--data", tmp_path / "train.h5", "--hidden", "5", "--epochs", "4", "--seed", "1", "--json",
            "--quiet"]
    straight = json.loads(run([*args, "--test-data", tmp_path / "test.h5"], np_=2).stdout.splitlines()[-1])
    reversed_ = json.loads(run([*args, "--test-data", tmp_path / "reversed.h5"], np_=2).stdout.splitlines()[-1])
    assert straight["test_accuracy"] == reversed_["test_accuracy"]
    assert straight["final_loss"] == reversed_["final_loss"]
    proc = run([*args, "--test-data", tmp_path / "renamed.h5"], np_=2, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "feature names differ" in lines[0], proc.stderr
