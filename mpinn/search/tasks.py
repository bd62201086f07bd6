"""The tasks of a search (candidate x fold): the estimator each one fits, its expected cost, and
fitting and scoring one task. No MPI here: a task's fit reaches its rank group through the
communicator set on the estimator (the ``comm`` parameter of mpinn's estimators).

Scoring follows scikit-learn's ``_fit_and_score``: a fit that raises gets ``error_score`` and its
traceback (the search warns with FitFailedWarning at the end), a scorer that raises gets
``error_score`` with a UserWarning, and ``error_score="raise"`` lets the exception through.
A signal (Preempted, KeyboardInterrupt) is never a task's result: it goes through too.
"""

from __future__ import annotations

import hashlib
import numbers
import time
import warnings
from contextlib import nullcontext
from traceback import format_exc

import numpy as np

from mpinn.data.rows import is_row_view
from mpinn.parallel.comm import is_process_failure
from mpinn.parallel.faults import Preempted


def _takes_comm(obj):
    """An mpinn estimator or transformer: it has a ``comm`` parameter and lives in mpinn."""
    return (type(obj).__module__.startswith("mpinn.") and hasattr(obj, "get_params")
            and "comm" in obj.get_params(deep=False))


def mpinn_paths(est):
    """Parameter prefixes of the mpinn objects with a ``comm`` in ``est`` ("" for est itself,
    "mlp__" for a Pipeline step named mlp, ...)."""
    paths = [""] if _takes_comm(est) else []
    if hasattr(est, "get_params"):
        paths += [f"{name}__" for name, value in est.get_params(deep=True).items() if _takes_comm(value)]
    return paths


def clone_without_comm(est):
    """(a clone of ``est`` whose mpinn estimators have comm=None, the comm values taken out).

    sklearn's clone deep-copies parameters and an MPI communicator cannot be copied; the tasks
    get their group's communicator instead, and the refit gets the values back."""
    from sklearn.base import clone

    saved = {f"{p}comm": est.get_params(deep=True)[f"{p}comm"] for p in mpinn_paths(est)}
    if not any(v is not None for v in saved.values()):
        return clone(est), saved
    est.set_params(**{k: None for k in saved})
    try:
        return clone(est), saved
    finally:
        est.set_params(**saved)


def search_comm_value(saved):
    """The communicator the search spans: the first mpinn estimator's comm, or None (world)."""
    return next((v for v in saved.values() if v is not None), None)


def for_task(est, comm):
    """Point every mpinn object of ``est`` at the group's communicator; tasks never write
    checkpoints (the groups would overwrite each other's), only the refit does."""
    params = est.get_params(deep=True) if hasattr(est, "get_params") else {}
    paths = mpinn_paths(est)
    if paths:
        est.set_params(**{f"{p}comm": comm for p in paths},
                       **{f"{p}checkpoint": None for p in paths if f"{p}checkpoint" in params})
    return est


def expected_cost(est, n_train, n_features, n_outputs):
    """epochs x rows x parameters of the MLP in ``est`` (rows alone for other estimators): the
    order in which the dynamic allocation hands out tasks, longest first."""
    params = est.get_params(deep=True) if hasattr(est, "get_params") else {}
    layers = epochs = None
    for key, value in params.items():
        name = key.rsplit("__", 1)[-1]
        if name == "hidden_layer_sizes":
            layers = [value] if isinstance(value, numbers.Integral) else list(value)
        elif name == "max_iter" and isinstance(value, numbers.Integral):
            epochs = int(value)
    if layers is None:
        return float(n_train)
    units = [n_features, *layers, n_outputs]
    n_params = sum((a + 1) * b for a, b in zip(units[:-1], units[1:]))
    return float(epochs or 1) * n_train * n_params


def longest_first(costs):
    """Task ids by expected cost, largest first; ties in task order (stable)."""
    return sorted(range(len(costs)), key=lambda t: -costs[t])


def fingerprint(parts):
    """A short hash naming one search: candidates, folds, scoring, estimator and data."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def describe(obj):
    """A repr stable across runs (a callable by its qualified name, not its address)."""
    if callable(obj) and not hasattr(obj, "get_params") and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    if isinstance(obj, dict):
        return {k: describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    return repr(obj)


class TaskFailed(Exception):
    """A task raised with error_score='raise'; carries the original exception (if this rank had
    it) and the message the group agreed on."""

    def __init__(self, message, original=None):
        super().__init__(message)
        self.original = original


def last_line(traceback_text):
    lines = [line for line in str(traceback_text).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def fit_and_score(est, X, y, train, test, *, scorers, fit_params, error_score, return_train_score,
                  agree, score=True, score_params=None, hooks=None, caller=None):
    """Fit ``est`` (already given its parameters and group communicator) on the train rows and
    score it on the test rows: the task's record (scores as {name: value}, times, error).

    As scikit-learn's ``_fit_and_score``: the rows are taken with ``_safe_split`` (a pairwise
    estimator's square X on both axes: train x train to fit, test x train to score), fit and
    score parameters of one value per row are cut to the fold's rows, and ``hooks`` (a callback
    context, see callbacks.py) is told where the fit begins and ends, with ``caller`` (the search)
    as the estimator. ``agree(message or None)`` returns the message of the lowest failing rank
    of the group, so every rank of a group records (or raises) the same outcome; ``score=False``
    (the group's other ranks) stops after the fit: only the leader scores and records. X given
    as a RowView (data/rows.py) is scored by the whole group, each rank predicting its block
    of the rows (estimators/base.py), and still recorded by the leader alone."""
    from sklearn.utils.metaestimators import _safe_split
    from sklearn.utils.validation import _check_method_params

    fit_params = _check_method_params(X, params=fit_params or {}, indices=train)
    X_train, y_train = _safe_split(est, X, y, train)
    X_test, y_test = _safe_split(est, X, y, test, train)
    weight = fit_params.get("sample_weight")
    metadata = None if weight is None else {"sample_weight": weight}
    start = time.time()
    error, original = None, None
    try:
        with hooks.propagate_callback_context(est) if hooks is not None else nullcontext():
            if hooks is not None:
                hooks.call_on_fit_task_begin(estimator=caller, X=X_train, y=y_train, metadata=metadata)
            est.fit(X_train, **fit_params) if y_train is None else est.fit(X_train, y_train, **fit_params)
    except Preempted:  # a signal stops the search; it is no result of this candidate
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one candidate is recorded
        if is_process_failure(exc):  # a rank of the group died: no result, the task runs again
            raise
        error, original = format_exc(), exc
    finally:
        if hooks is not None:
            hooks.call_on_fit_task_end(estimator=caller, X=X_train, y=y_train, metadata=metadata)
    fit_time = time.time() - start
    error = agree(error)
    record = {"fit_time": fit_time, "score_time": 0.0, "n_test": int(len(test)), "error": error,
              "test": None, "train": None}
    if error is not None:
        if error_score == "raise":
            raise TaskFailed(last_line(error), original)
        return record
    if not score and not is_row_view(X):
        return None
    score_params = score_params or {}
    with warnings.catch_warnings():
        if not score:  # a member scoring only to predict its block with the group: the leader warns
            warnings.simplefilter("ignore")
        record["test"] = _score(est, X_test, y_test, scorers, _check_method_params(X, score_params, test),
                                error_score)
        record["score_time"] = time.time() - start - fit_time
        if return_train_score:
            record["train"] = _score(est, X_train, y_train, scorers, _check_method_params(X, score_params, train),
                                     error_score)
    return record if score else None


def _score(est, X, y, scorers, params, error_score):
    """{name: score}: "score" for a single scorer, the scorer names for several (a dict of
    scorers or scikit-learn's _MultimetricScorer), with scikit-learn's own ``_score`` (its
    warnings and error_score rules)."""
    from sklearn.metrics._scorer import _MultimetricScorer
    from sklearn.model_selection._validation import _score as sklearn_score

    if isinstance(scorers, dict):
        scorers = _MultimetricScorer(scorers=scorers, raise_exc=(error_score == "raise"))
    value = sklearn_score(est, X, y, scorers, params, error_score)
    if isinstance(value, dict):
        return {name: _number(v, name) for name, v in value.items()}
    return {"score": _number(value, scorers)}


def end_line(parameters, split, candidate, record, verbose, return_train_score):
    """scikit-learn's ``[CV k/K] END params;, score=... total time=...`` line of one task
    (verbose > 1; scores from verbose 3, the candidate from verbose 10)."""
    from joblib import logger

    progress = ""
    if verbose > 2:
        progress = f" {split[0] + 1}/{split[1]}" + (f"; {candidate[0] + 1}/{candidate[1]}" if verbose > 9 else "")
    text = ", ".join(f"{k}={parameters[k]}" for k in sorted(parameters))
    text += ";" if text else ""
    test, train = record["test"], record["train"]
    if verbose > 2 and test is not None:
        if list(test) != ["score"]:
            for name in sorted(test):
                text += f" {name}: (" + (f"train={train[name]:.3f}, " if return_train_score else "")
                text += f"test={test[name]:.3f})"
        elif return_train_score:
            text += f", score=(train={train['score']:.3f}, test={test['score']:.3f})"
        else:
            text += f", score={test['score']:.3f}"
    text += f" total time={logger.short_format_time(record['fit_time'] + record['score_time'])}"
    head = f"[CV{progress}] END "
    return head + "." * (80 - len(head) - len(text)) + text


def _number(value, scorer):
    if hasattr(value, "item"):
        try:
            value = value.item()
        except ValueError:
            pass
    if not isinstance(value, numbers.Number):
        raise ValueError(f"scoring must return a number, got {value} ({type(value)}) instead. (scorer={scorer})")
    return float(value)
