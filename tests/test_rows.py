"""data/rows.py: a RowView reads the rows the materialised array would give, bit for bit, and
only those; taking rows of it reads nothing."""

import h5py
import numpy as np
import pytest

from mpinn.data import rows as rows_mod
from mpinn.data.rows import RowView, is_row_view


@pytest.fixture
def stored(tmp_path):
    X = np.random.default_rng(0).standard_normal((1000, 5)).astype(np.float32)
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["X"] = X
    return path, X.astype(np.float64)


def test_taking_rows_reads_nothing_and_reading_gives_the_array_rows(stored):
    path, X = stored
    view = RowView(path, "X")
    assert is_row_view(view) and view.shape == X.shape and len(view) == 1000 and view.ndim == 2
    rng = np.random.default_rng(1)
    idx = rng.permutation(1000)[:300]
    fold = view[idx]
    mask = rng.random(300) < 0.5
    inner = fold[mask][::-1][np.array([0, -1, 5, 5])]  # a mask, a reversed slice, repeats and a negative index
    assert view.rows_read == 0
    expected = X[idx][mask][::-1][np.array([0, -1, 5, 5])]
    assert np.array_equal(inner.read(), expected)
    assert view.rows_read == 4  # views taken from it count into it
    assert np.array_equal(np.asarray(fold), X[idx]) and np.array_equal(fold[(slice(2, 9), Ellipsis)].read(), X[idx][2:9])
    assert np.array_equal(fold[7], X[idx[7]])


def test_scattered_rows_are_read_in_bounded_spans(stored, monkeypatch):
    path, X = stored
    monkeypatch.setattr(rows_mod, "WINDOW_BYTES", 40 * 5 * 8)  # 40 rows a span
    spans = []
    real = h5py.Dataset.__getitem__

    def spy(self, key):
        spans.append(key)
        return real(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    want = np.array([999, 3, 500, 4, 998, 41, 3])
    assert np.array_equal(RowView(path, "X").read(want), X[want])
    assert [(k.start, k.stop) for k in spans] == [(3, 42), (500, 501), (998, 1000)]  # spans of <= 40 rows


def test_transforms_apply_after_the_read_and_commute_with_taking_rows(stored):
    path, X = stored
    scaled = RowView(path, "X").with_transform(lambda a: a * 2.0 - 1.0)[np.array([5, 1])]
    assert np.array_equal(scaled.read(), X[[5, 1]] * 2.0 - 1.0)


def test_bad_indices_are_clear_errors(stored):
    path, _ = stored
    view = RowView(path, "X")
    with pytest.raises(IndexError, match="out of range"):
        view[np.array([1000])]
    with pytest.raises(IndexError, match="boolean index"):
        view[np.ones(3, dtype=bool)]
    with pytest.raises(TypeError, match="indexed by rows only"):
        view[:, 1]


def test_a_scikit_learn_search_over_a_scikit_learn_estimator_takes_it_too(stored):
    """An estimator that is not mpinn's gets the rows as an array (np.asarray reads them)."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV as SkGrid

    import mpinn

    path, X = stored
    y = X @ np.arange(5.0)
    ours = mpinn.GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=3).fit(RowView(path, "X"), y)
    ref = SkGrid(Ridge(), {"alpha": [0.1, 1.0]}, cv=3).fit(X, y)
    assert np.array_equal(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"])


def test_increasing_rows_are_read_in_place_and_a_1d_dataset_as_one_column(stored, tmp_path):
    path, X = stored
    rows = np.r_[0:100, 150:160, 700, 990:1000]
    assert np.array_equal(RowView(path, "X")[rows].read(), X[rows])  # runs read in place, the rest gathered
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["x"] = X[:, 0].astype(np.float32)
    one = RowView(tmp_path / "one.h5", "x", shape=(1000, 1))  # what `mpinn search` builds from a 1-D X
    assert np.array_equal(one[rows].read(), X[rows, :1]) and np.array_equal(one.read([5, 2]), X[[5, 2], :1])
