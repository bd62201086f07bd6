"""Serial tests for mpinn.nn.metrics: agreement with sklearn and the sum-of-partials property."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mpinn.errors import InputError
from mpinn.nn.metrics import (
    classification_report,
    confusion_counts,
    regression_first_pass,
    regression_report,
    regression_second_pass,
)

K = 5
CHUNKINGS = [1, 2, 3, 7]


def _classification_data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    # Class 4 never appears in y_true; class 3 is never predicted.
    y_true = rng.integers(0, 4, size=n)
    y_pred = rng.choice([0, 1, 2, 4], size=n)
    y_pred[:40] = y_true[:40]  # some agreement so precision/recall are not all tiny
    y_pred[y_pred == 3] = 0
    return y_true, y_pred


def _regression_data(seed=1, n=150):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -2.0]
    y[:, 2] = 3.5  # constant-target output
    p = y + rng.normal(scale=0.3, size=y.shape)
    return y, p


def _chunks(n, parts):
    """Disjoint row slices covering 0..n; with parts > 1 the second chunk is empty."""
    if parts == 1:
        return [slice(0, n)]
    cuts = np.linspace(0, n, parts, dtype=int).tolist()
    cuts = [0, 0] + cuts[1:]  # slice(0, 0) is the empty chunk
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def _regression_distributed(y, p, parts):
    idx = _chunks(len(y), parts)
    first = sum(regression_first_pass(y[s]) for s in idx)
    mean = first[1:] / first[0]
    second = sum(regression_second_pass(y[s], p[s], mean) for s in idx)
    return first, second


def test_chunks_helper_is_a_disjoint_cover_with_an_empty_chunk():
    for parts in CHUNKINGS:
        idx = _chunks(10, parts)
        assert len(idx) == parts
        assert np.concatenate([np.arange(10)[s] for s in idx]).tolist() == list(range(10))
        if parts > 1:
            assert any(s.start == s.stop for s in idx)


def test_confusion_matches_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = _classification_data()
    c = confusion_counts(y_true, y_pred, K)
    assert c.dtype == np.int64 and c.shape == (K, K)
    np.testing.assert_array_equal(c, skm.confusion_matrix(y_true, y_pred, labels=range(K)))
    assert c[4].sum() == 0 and c[:, 3].sum() == 0  # the absent and never-predicted classes


def test_classification_report_matches_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = _classification_data()
    rep = classification_report(confusion_counts(y_true, y_pred, K))
    labels = list(range(K))

    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), rel=1e-12)
    p, r, f, s = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    assert rep["precision"] == pytest.approx(p.tolist(), rel=1e-12)
    assert rep["recall"] == pytest.approx(r.tolist(), rel=1e-12)
    assert rep["f1"] == pytest.approx(f.tolist(), rel=1e-12)
    assert rep["support"] == s.tolist()
    pm, rm, fm, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    assert rep["precision_macro"] == pytest.approx(pm, rel=1e-12)
    assert rep["recall_macro"] == pytest.approx(rm, rel=1e-12)
    assert rep["f1_macro"] == pytest.approx(fm, rel=1e-12)
    assert rep["confusion"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert rep["classes"] == labels
    # Zero-division classes are 0.0, and they still count in the macro average.
    assert rep["precision"][3] == 0.0 and rep["recall"][4] == 0.0 and rep["f1"][4] == 0.0


@pytest.mark.parametrize("parts", CHUNKINGS)
def test_confusion_sum_of_chunks_equals_whole(parts):
    y_true, y_pred = _classification_data(seed=3, n=101)
    whole = confusion_counts(y_true, y_pred, K)
    summed = sum(confusion_counts(y_true[s], y_pred[s], K) for s in _chunks(len(y_true), parts))
    assert summed.dtype == np.int64
    np.testing.assert_array_equal(summed, whole)
    assert classification_report(summed) == classification_report(whole)


def test_tiny_classification_by_hand():
    # true: 0 0 1 1 1 ; pred: 0 1 1 1 0
    c = confusion_counts(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), 2)
    assert c.tolist() == [[1, 1], [1, 2]]
    rep = classification_report(c, class_labels=np.array(["cat", "dog"]))
    assert rep["accuracy"] == pytest.approx(3 / 5)
    assert rep["precision"] == pytest.approx([1 / 2, 2 / 3])
    assert rep["recall"] == pytest.approx([1 / 2, 2 / 3])
    assert rep["f1"] == pytest.approx([1 / 2, 2 / 3])
    assert rep["support"] == [2, 3]
    assert rep["precision_macro"] == pytest.approx(7 / 12)
    assert rep["recall_macro"] == pytest.approx(7 / 12)
    assert rep["f1_macro"] == pytest.approx(7 / 12)
    assert rep["classes"] == ["cat", "dog"]
    assert type(rep["classes"][0]) is str
    json.dumps(rep)  # plain Python values only


def test_tiny_regression_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 3.0, 3.0, 2.0])
    first = regression_first_pass(y)
    assert first.tolist() == [4.0, 10.0]
    second = regression_second_pass(y, p, first[1:] / first[0])
    assert second.tolist() == [5.0, 3.0, 5.0]  # sse = 0+1+0+4, sae = 0+1+0+2, sst around 2.5
    rep = regression_report(first, second)
    assert rep == {"mse": 1.25, "mae": 0.75, "r2": 0.0, "n": 4}
    assert type(rep["n"]) is int
    json.dumps(rep)


@pytest.mark.parametrize("cols", [None, slice(0, 1), slice(0, 2), slice(None)])
def test_regression_matches_sklearn(cols):
    skm = pytest.importorskip("sklearn.metrics")
    y, p = _regression_data()
    if cols is None:  # 1-D target
        y, p = y[:, 1], p[:, 1]
    else:
        y, p = y[:, cols], p[:, cols]
    first = regression_first_pass(y)
    second = regression_second_pass(y, p, first[1:] / first[0])
    rep = regression_report(first, second)
    assert rep["n"] == len(y)
    assert rep["mse"] == pytest.approx(skm.mean_squared_error(y, p), rel=1e-12)
    assert rep["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
    assert rep["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-12)


def test_r2_constant_target_follows_sklearn_force_finite():
    skm = pytest.importorskip("sklearn.metrics")
    y = np.array([[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]])
    for p, expected in [(y.copy(), 1.0), (y + [[0.0, 0.5]], 0.5)]:  # outputs: perfect, imperfect
        first = regression_first_pass(y)
        rep = regression_report(first, regression_second_pass(y, p, first[1:] / first[0]))
        assert rep["r2"] == expected == skm.r2_score(y, p)


@pytest.mark.parametrize("parts", CHUNKINGS)
@pytest.mark.parametrize("one_d", [False, True])
def test_regression_sum_of_chunks_equals_whole(parts, one_d):
    y, p = _regression_data(seed=5, n=97)
    if one_d:
        y, p = y[:, 0], p[:, 0]
    first_w = regression_first_pass(y)
    second_w = regression_second_pass(y, p, first_w[1:] / first_w[0])
    first, second = _regression_distributed(y, p, parts)
    assert first[0] == first_w[0] == len(y)
    assert first == pytest.approx(first_w, rel=1e-12)
    assert second == pytest.approx(second_w, rel=1e-12, abs=0)
    whole, dist = regression_report(first_w, second_w), regression_report(first, second)
    assert dist["n"] == whole["n"]
    for key in ("mse", "mae", "r2"):
        assert dist[key] == pytest.approx(whole[key], rel=1e-12)


def test_partials_are_float64_with_expected_layout():
    y, p = _regression_data(n=8)
    first = regression_first_pass(y)
    second = regression_second_pass(y, p, np.zeros(3))
    assert first.dtype == np.float64 and first.shape == (4,)
    assert second.dtype == np.float64 and second.shape == (9,)
    empty = regression_first_pass(y[:0])
    assert empty.tolist() == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "call",
    [
        lambda: confusion_counts([0, 1], [0, 2], 2),  # index out of range
        lambda: confusion_counts([0, 1], [0], 2),  # length mismatch
        lambda: confusion_counts([0.0, 1.0], [0, 1], 2),  # not integer indices
        lambda: classification_report(np.zeros((2, 3))),
        lambda: classification_report(np.zeros((2, 2)), class_labels=["a"]),
        lambda: regression_second_pass([1.0, 2.0], [1.0], [1.5]),
        lambda: regression_report([0.0, 0.0], [0.0, 0.0, 0.0]),  # n == 0
        lambda: regression_report([2.0, 1.0, 1.0], [0.0, 0.0, 0.0]),  # length mismatch
    ],
)
def test_bad_input_raises_input_error(call):
    with pytest.raises(InputError):
        call()


def test_module_does_not_import_mpi4py():
    code = "import sys, mpinn.nn.metrics; assert 'mpi4py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
