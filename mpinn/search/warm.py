"""Successive halving that continues a promoted candidate instead of training it again
(``warm_start_promoted=True`` with the epochs, max_iter, as the resource).

Each task (candidate, fold) keeps its fit's end state, everything a checkpoint holds (weights,
optimizer, shuffling RandomState, stopping counters: train/state.py), and its group's leader
saves it as models/c<candidate>-k<fold>.npz. When the candidate is promoted, the next
iteration's task on that fold restores the state and trains only the epochs from there to the
new max_iter. mpinn's batch order is drawn from the restored RandomState, so the fit ends
exactly where one fit of that many epochs from epoch 0 ends, and the scores equal the
from-scratch halving search's. The state is a file, so the next iteration's task may run on any
group, of any size, and a resumed search finds it too.

A state is a shortcut, never needed for the result: it is written atomically but not fsynced,
and one that is missing, damaged or past the task's epochs makes the task train from epoch 0,
which gives the same scores. No pickle: arrays in .npz, the scalars as JSON inside it.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from mpinn.search.tasks import mpinn_paths

MODELS = "models"
SCALARS = "__scalars__.json"


def mlp_path(est):
    """The parameter prefix of the mpinn MLP in ``est`` ("" for est itself, "mlp__" in a
    Pipeline), or None: the one mpinn object with a ``max_iter`` parameter."""
    params = est.get_params(deep=True) if hasattr(est, "get_params") else {}
    found = [p for p in mpinn_paths(est) if f"{p}max_iter" in params]
    return found[0] if found else None


def _mlp(est, prefix):
    return est if prefix == "" else est.get_params(deep=True)[prefix[:-2]]


def save_state(path, state):
    """(scalars, arrays) to ``path`` (.npz), atomically."""
    scalars, arrays = state
    blob = np.frombuffer(json.dumps(scalars).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{SCALARS: blob}, **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_state(path):
    """(scalars, arrays) saved by save_state."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads(arrays.pop(SCALARS).tobytes().decode()), arrays


class PromotedModels:
    """The saved runs of every (candidate, fold) under ``directory``; a candidate is named by its
    index in the first iteration (``origin``)."""

    def __init__(self, directory):
        self.directory = os.fspath(directory)

    def path(self, origin, fold):
        return os.path.join(self.directory, f"c{origin:04d}-k{fold}.npz")

    def hooks(self, origins):
        """(prepare_task, after_task) for a Round whose candidate c is first-iteration candidate
        origins[c]: the task's MLP keeps its end state, which the leader saves, and continues
        the state found saved."""
        def prepare_task(est, c, k, comm):
            prefix = mlp_path(est)
            if prefix is None:
                raise ValueError("warm_start_promoted=True needs an mpinn MLPClassifier or MLPRegressor "
                                 "(alone or in a Pipeline)")
            mlp = _mlp(est, prefix)
            mlp._keep_run_state = True
            state = _usable(self.path(origins[c], k), mlp.max_iter, comm)
            if state is not None:
                mlp._continue_from = state

        def after_task(est, c, k, record):
            prefix = mlp_path(est)
            mlp = _mlp(est, prefix) if prefix is not None else None
            state = getattr(mlp, "_run_state", None)
            if record is not None and record.get("error") is None and state is not None:
                save_state(self.path(origins[c], k), state)
            record_epochs(est, c, k, record)
        return prepare_task, after_task


def _usable(path, max_iter, comm):
    """The state saved at ``path`` on every rank of the group, or None on every rank when it is
    missing, unreadable on a rank, or past ``max_iter`` epochs (it cannot be wound back)."""
    state, problem = None, None
    try:
        state = load_state(path) if os.path.exists(path) else None
    except Exception as exc:  # noqa: BLE001 - a damaged state only means training from epoch 0
        problem = f"{path}: {exc}"
    if state is not None:
        scalars = state[0]
        epoch = scalars["epoch"] + (1 if scalars["step_in_epoch"] else 0)
        if epoch > max_iter:
            problem = f"{path}: saved at epoch {epoch}, past max_iter={max_iter}"
    missing = comm.allreduce(np.array([0.0 if state is not None and problem is None else 1.0]), "max")[0]
    return None if missing else state


def record_epochs(est, c, k, record):
    """The task's epochs in its record: n_iter (where the fit ended) and epochs_trained (by
    this fit, from where it started)."""
    if record is None or record.get("error") is not None:
        return
    prefix = mlp_path(est)
    mlp = _mlp(est, prefix) if prefix is not None else None
    n_iter = getattr(mlp, "n_iter_", None)
    if n_iter is not None:
        record["n_iter"] = int(n_iter)
        record["epochs_trained"] = int(n_iter) - int(getattr(mlp, "_restored_epoch", 0))
