"""Successive halving that continues a promoted candidate instead of training it again
(``warm_start_promoted=True`` with the epochs, max_iter, as the resource).

Each task (candidate, fold) keeps its fit's end state, everything a checkpoint holds (weights,
optimizer, shuffling RandomState, stopping counters: train/state.py), on its group's leader;
once the round is over, the leaders save the states of the promoted candidates as
models/c<candidate>-k<fold>.npz (the others are dropped). When the candidate is promoted, the next
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
    """The object at ``prefix`` in ``est`` (a Pipeline's step by name: get_params is slow)."""
    for name in prefix.split("__")[:-1]:
        steps = getattr(est, "named_steps", None)
        est = steps[name] if steps is not None and name in steps else est.get_params(deep=True)[name]
    return est


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
        self.held = {}  # (origin, fold) -> state of the tasks this leader ran in the current round

    def path(self, origin, fold):
        return os.path.join(self.directory, f"c{origin:04d}-k{fold}.npz")

    def hooks(self, origins, prefix):
        """(prepare_task, after_task) for a Round whose candidate c is first-iteration candidate
        origins[c], the MLP at ``prefix`` (mlp_path): the task's MLP keeps its end state, which
        the leader saves, and continues the state found saved."""
        if prefix is None:
            raise ValueError("warm_start_promoted=True needs an mpinn MLPClassifier or MLPRegressor (alone or "
                             "in a Pipeline)")
        record = epoch_recorder(prefix)

        def prepare_task(est, c, k, comm):
            mlp = _mlp(est, prefix)
            mlp._keep_run_state = True
            state = _usable(self.path(origins[c], k), mlp.max_iter, comm)
            if state is not None:
                mlp._continue_from = state

        def after_task(est, c, k, result):
            state = getattr(_mlp(est, prefix), "_run_state", None)
            if result is not None and result.get("error") is None and state is not None:
                self.held[origins[c], k] = state  # saved by keep() if the candidate is promoted
            record(est, c, k, result)
        return prepare_task, after_task

    def keep(self, world, promoted):
        """Collective, after a round: each leader saves the states it holds of the ``promoted``
        candidates (first-iteration indices) and drops the others; then every rank may read
        them. A state that cannot be written costs only time (that task trains from epoch 0)."""
        promoted = set(promoted)
        for (origin, fold), state in self.held.items():
            if origin in promoted:
                try:
                    save_state(self.path(origin, fold), state)
                except OSError:
                    pass
        self.held = {}
        world.quiet_barrier()


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


def epoch_recorder(prefix):
    """``after_task`` that writes the task's epochs in its record, for the MLP at ``prefix``
    (None: no mpinn MLP, nothing to write): n_iter (where the fit ended) and epochs_trained (by
    this fit, from where it started)."""
    def record_epochs(est, c, k, record):
        if prefix is None or record is None or record.get("error") is not None:
            return
        mlp = _mlp(est, prefix)
        n_iter = getattr(mlp, "n_iter_", None)
        if n_iter is not None:
            record["n_iter"] = int(n_iter)
            record["epochs_trained"] = int(n_iter) - int(getattr(mlp, "_restored_epoch", 0))
    return record_epochs
