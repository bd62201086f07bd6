"""One round of a search's tasks (candidate x fold) on the rank groups: the existing allocations,
task log and failure rules (run.py, tasklog.py) applied to a list of candidates and folds that
the caller chooses, so a search made of several rounds (successive halving) runs each of them
as GridSearchCV runs its only one. The caller owns the rank groups and the signal watch.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.utils import _safe_indexing

from mpinn.parallel.agree import on_root
from mpinn.search import tasks as search_tasks
from mpinn.search.run import collect, run_tasks
from mpinn.search.stopping import finish


class Round:
    """The tasks of one round: ``candidates`` x ``splits``, task t = (t // n_splits, t % n_splits)
    as scikit-learn orders them. ``log``: this round's TaskLog or None. Optional hooks, on every
    rank of the task's group: ``prepare_task(est, c, k, comm)`` before the fit (e.g. to continue
    a saved model), ``after_task(est, c, k, record)`` after it (the leader's record, None elsewhere)."""

    def __init__(self, candidates, splits, log=None, name="", prepare_task=None, after_task=None):
        self.candidates, self.splits, self.log, self.name = list(candidates), list(splits), log, name
        self.prepare_task, self.after_task = prepare_task, after_task

    @property
    def n_tasks(self):
        return len(self.candidates) * len(self.splits)


def previous_records(world, log, description):
    """Rank 0 reads the round's task log: {task: record} of the finished tasks on rank 0,
    {task: None} on the others (they need only to know which tasks are done)."""
    if log is None:
        return {}
    found = {}

    def read():
        log.prepare(description)
        found.update(log.read())
        return sorted(found)

    done = on_root(world, read)
    return found if world.rank == 0 else dict.fromkeys(done)


def run_round(search, team, rnd, base, X, y, fit_params, scorers, *, run_id, signals, description, costs,
              task_hook=None, progress=None):
    """Run the round's unfinished tasks on ``team`` (collective over all ranks); returns the
    records of all its tasks in task order (the same on every rank) and (tasks resumed, run)."""
    world = team.world
    previous = previous_records(world, rnd.log, description)
    pending = [t for t in range(rnd.n_tasks) if t not in previous]
    writer = rnd.log.writer(run_id, team.index) if rnd.log and team.leader else None
    execute = _executor(search, team, rnd, base, X, y, fit_params, scorers, writer, task_hook)
    records, stop = run_tasks(team, pending, costs, search.allocation, execute, progress=progress,
                              stop_requested=lambda: signals.requested)
    if writer:
        writer.close()
    finish(team, stop)  # every rank raises the first failing group's error, or none does
    records = collect(team, records, previous)
    return [records[t] for t in range(rnd.n_tasks)], (len(previous), len(pending))


def _executor(search, team, rnd, base, X, y, fit_params, scorers, writer, task_hook):
    n_splits = len(rnd.splits)

    def execute(t):
        c, k = divmod(t, n_splits)
        if task_hook:
            task_hook()
        est = search_tasks.for_task(clone(base).set_params(**clone(rnd.candidates[c], safe=False)), team.comm)
        if rnd.prepare_task:
            rnd.prepare_task(est, c, k, team.comm)
        train, test = rnd.splits[k]
        params = {key: (_safe_indexing(v, train) if _per_sample(v, len(X)) else v) for key, v in fit_params.items()}
        record = search_tasks.fit_and_score(
            est, X, y, train, test, scorers=scorers, fit_params=params, error_score=search.error_score,
            return_train_score=search.return_train_score, agree=team.comm.any_error, score=team.leader)
        if rnd.after_task:
            rnd.after_task(est, c, k, record)
        if writer:
            writer.append(t, {"candidate": c, "split": k, **record})
        if search.verbose > 1 and team.leader:
            test = record["test"]
            score = "failed" if test is None else ", ".join(f"{n}={v:.4g}" for n, v in test.items())
            print(f"[{rnd.name}CV {k + 1}/{n_splits}; {c + 1}/{len(rnd.candidates)}] group {team.index}: "
                  f"{rnd.candidates[c]} {score} ({record['fit_time']:.2f}s)", flush=True)
        return record
    return execute


def task_costs(base, candidates, splits, n_features, n_outputs):
    """Each task's expected cost (the dynamic allocation hands out the longest first)."""
    if not search_tasks.mpinn_paths(base):  # rows alone (no clone given each candidate's parameters)
        per_row = [1.0] * len(candidates)
    else:
        per_row = [search_tasks.expected_cost(clone(base).set_params(**c), 1, n_features, n_outputs)
                   for c in candidates]
    n_splits = len(splits)
    return [per_row[t // n_splits] * len(splits[t % n_splits][0]) for t in range(len(candidates) * n_splits)]


def _per_sample(value, n):
    return hasattr(value, "__len__") and not isinstance(value, (str, dict)) and len(value) == n


def splits_from_root(comm, cv, X, y, split_params):
    """The folds rank 0 draws (a shuffled splitter without a seed would differ per rank), as row
    indices (a splitter may give boolean masks); an error in cv.split (too few rows for the
    folds ...) is raised on every rank."""
    splits = []

    def draw():
        splits.extend((_indices(a), _indices(b)) for a, b in cv.split(X, y, **split_params))
        return [[len(a), len(b)] for a, b in splits]

    sizes = on_root(comm, draw)
    if comm.size == 1 or not sizes:  # no split (an exhausted iterator): fit raises on every rank
        return [(np.asarray(a, np.int64), np.asarray(b, np.int64)) for a, b in splits]
    flat = np.concatenate([np.concatenate([a, b]) for a, b in splits]).astype(np.int64) if comm.rank == 0 \
        else np.empty(sum(a + b for a, b in sizes), np.int64)
    comm.bcast_array(flat)
    out, at = [], 0
    for a, b in sizes:
        out.append((flat[at:at + a], flat[at + a:at + a + b]))
        at += a + b
    return out


def _indices(rows):
    rows = np.asarray(rows)
    return np.flatnonzero(rows) if rows.dtype == bool else rows
