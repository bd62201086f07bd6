"""GridSearchCV and RandomizedSearchCV whose tasks (candidate x fold) run on groups of ranks.

scikit-learn's search, data-parallel: under ``mpiexec -n N`` the ranks form N / group_size
groups, each task is one fit on its group (mpinn's estimators train data-parallel on the
group's communicator), and the scores are aggregated exactly as scikit-learn aggregates them.
The candidates (ParameterGrid, ParameterSampler), the folds (check_cv) and the scorers
(check_scoring, get_scorer) are scikit-learn's own, so ``cv_results_`` has its keys and values
whatever N, group_size and the allocation. Needs scikit-learn. See docs/search.md.
"""

from __future__ import annotations

import numbers
import time

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.metrics import check_scoring, get_scorer
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.utils import _safe_indexing, get_tags, indexable
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from mpinn.search import results as search_results
from mpinn.search import tasks as search_tasks
from mpinn.parallel.comm import as_comm
from mpinn.search.tasklog import TaskLog, new_run_id
from mpinn.parallel.agree import on_root
from mpinn.parallel.faults import Preemption
from mpinn.search.run import ALLOCATIONS, Groups, collect, finish, run_tasks


def _has(attr):
    """Delegate ``attr`` to the best estimator (or, before fit, the estimator), as sklearn."""
    def check(self):
        if not self.refit:
            raise AttributeError(f"This {type(self).__name__} instance was initialized with `refit=False`. {attr} "
                                 "is available only after refitting on the best parameters.")
        getattr(self.best_estimator_ if hasattr(self, "best_estimator_") else self.estimator, attr)
        return True
    return check


class _BaseSearch(MetaEstimatorMixin, BaseEstimator):
    """fit, the fitted attributes and the delegated methods; subclasses give the candidates."""

    def _candidates(self, comm):
        raise NotImplementedError

    # ---- fit --------------------------------------------------------------------------------

    def fit(self, X, y=None, *, groups=None, **fit_params):
        """Run every task (candidate x fold) on the rank groups, then refit the best candidate on
        all ranks. Every rank passes the same X, y (as for mpinn's estimators)."""
        self._check_params()
        base, saved_comms = search_tasks.clone_without_comm(self.estimator)
        world = as_comm(search_tasks.search_comm_value(saved_comms))
        scorers, refit_metric = self._scorers()
        X, y, groups = indexable(X, y, groups)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self.n_splits_ = cv.get_n_splits(X, y, groups)
        splits = _splits_from_root(world, cv, X, y, groups)
        if len(splits) != self.n_splits_:
            raise ValueError(f"cv.split and cv.get_n_splits return inconsistent results. Expected "
                             f"{self.n_splits_} splits, got {len(splits)}")
        candidates = list(self._candidates(world))
        n_tasks = len(candidates) * self.n_splits_
        if n_tasks < 1:
            raise ValueError("No fits were performed. Was the CV iterator empty? Were there no candidates?")
        fit_params = {k: v for k, v in fit_params.items() if v is not None}
        fp = self._fingerprint(base, candidates, splits, X, y)
        log = TaskLog(self.checkpoint, fp) if self.checkpoint is not None else None
        previous = self._previous_records(world, log, candidates)
        pending = [t for t in range(n_tasks) if t not in previous]
        self.tasks_resumed_, self.tasks_run_ = len(previous), len(pending)
        n_outputs = max(1, len(np.unique(np.asarray(y)))) if is_classifier(self.estimator) and y is not None else 1
        n_outputs = 1 if n_outputs == 2 else n_outputs
        per_row = [search_tasks.expected_cost(clone(base).set_params(**c), 1, _n_features(X), n_outputs)
                   for c in candidates]
        costs = [per_row[t // self.n_splits_] * len(splits[t % self.n_splits_][0]) for t in range(n_tasks)]
        if self.verbose > 0 and world.rank == 0:
            print(f"Fitting {self.n_splits_} folds for each of {len(candidates)} candidates, totalling {n_tasks} "
                  f"fits ({len(previous)} done before) on {world.size} rank(s) in groups of {self.group_size}, "
                  f"allocation {self.allocation}", flush=True)
        team = Groups(world, self.group_size)
        try:
            run_id = world.bcast_json(new_run_id()) if log else None  # collective: before any branch
            # A signal during the search sets a flag (its fits share it): the tasks stop at the next
            # step or task boundary, the finished ones are on disk, and every rank raises Preempted
            # (SIGTERM, SIGUSR1) or Interrupted (SIGINT); the interrupted tasks rerun on resume.
            with Preemption.watch() as signals:
                writer = log.writer(run_id, team.index) if log and team.leader else None
                execute = self._executor(team, base, candidates, splits, X, y, fit_params, scorers, writer)
                records, stop = run_tasks(team, pending, costs, self.allocation, execute, progress=self._progress,
                                          stop_requested=lambda: signals.requested)
                if writer:
                    writer.close()
                finish(team, stop)  # every rank raises the first failing group's error, or none does
            records = collect(team, records, previous)
        finally:
            team.close()
        ordered = [records[t] for t in range(n_tasks)]
        search_results.fit_failures(ordered, self.error_score)
        results = search_results.format_results(candidates, self.n_splits_, ordered, self.error_score,
                                                self.return_train_score)
        self.multimetric_ = isinstance(scorers, dict) or search_results.scorer_names(ordered) != ["score"]
        if callable(self.scoring) and self.multimetric_:
            self._check_refit_for_multimetric(search_results.scorer_names(ordered))
            refit_metric = self.refit
        self._select_best(results, refit_metric)
        if self.refit:
            self._refit(base, saved_comms, X, y, fit_params, world)
        self.scorer_ = scorers
        self.cv_results_ = results
        return self

    def _fingerprint(self, base, candidates, splits, X, y):
        """What must not change for a checkpoint's records to be reused (not comm or checkpoint)."""
        return search_tasks.fingerprint(
            [search_tasks.describe(c) for c in candidates] + [a for split in splits for a in split]
            + [search_tasks.describe(self.scoring), repr(search_tasks.for_task(clone(base), None)),
               self.return_train_score, np.asarray(X), None if y is None else np.asarray(y)])

    def _executor(self, team, base, candidates, splits, X, y, fit_params, scorers, writer):
        def execute(t):
            c, k = divmod(t, self.n_splits_)
            if self._task_hook:
                self._task_hook()
            est = search_tasks.for_task(clone(base).set_params(**clone(candidates[c], safe=False)), team.comm)
            train, test = splits[k]
            params = {key: (_safe_indexing(v, train) if _per_sample(v, len(X)) else v) for key, v in fit_params.items()}
            record = search_tasks.fit_and_score(
                est, X, y, train, test, scorers=scorers, fit_params=params, error_score=self.error_score,
                return_train_score=self.return_train_score, agree=team.comm.any_error, score=team.leader)
            if writer:
                writer.append(t, {"candidate": c, "split": k, **record})
            if self.verbose > 1 and team.leader:
                test = record["test"]
                score = "failed" if test is None else ", ".join(f"{n}={v:.4g}" for n, v in test.items())
                print(f"[CV {k + 1}/{self.n_splits_}; {c + 1}/{len(candidates)}] group {team.index}: "
                      f"{candidates[c]} {score} ({record['fit_time']:.2f}s)", flush=True)
            return record
        return execute

    def _previous_records(self, world, log, candidates):
        """Rank 0 reads the checkpoint: {task: record} of the finished tasks on rank 0, {task: None}
        on the others (they need only to know which tasks are done)."""
        if log is None:
            return {}
        found = {}

        def read():
            log.prepare({"candidates": len(candidates), "splits": self.n_splits_, "class": type(self).__name__})
            found.update(log.read())
            return sorted(found)

        done = on_root(world, read)
        return found if world.rank == 0 else dict.fromkeys(done)

    _progress = None  # rank 0's progress(done, total), set by `mpinn search` on a terminal
    _task_hook = None  # called before each task on every rank (`mpinn search`'s fault injection)

    def _select_best(self, results, refit_metric):
        if self.refit or not self.multimetric_:
            if callable(self.refit):
                best = self.refit(results)
                if not isinstance(best, numbers.Integral):
                    raise TypeError("best_index_ returned is not an integer")
                if best < 0 or best >= len(results["params"]):
                    raise IndexError("best_index_ index out of range")
            else:
                best = int(results[f"rank_test_{refit_metric}"].argmin())
                self.best_score_ = results[f"mean_test_{refit_metric}"][best]
            self.best_index_ = best
            self.best_params_ = results["params"][best]

    def _refit(self, base, saved_comms, X, y, fit_params, world):
        """The best candidate on all the data, data-parallel on all the search's ranks (with the
        estimator's own comm and checkpoint parameters): the same best_estimator_ on every rank."""
        best = clone(base).set_params(**clone(self.best_params_, safe=False))
        if any(v is not None for v in saved_comms.values()):
            best.set_params(**saved_comms)
        start = time.time()
        best.fit(X, **fit_params) if y is None else best.fit(X, y, **fit_params)
        self.refit_time_ = time.time() - start
        self.best_estimator_ = best
        if hasattr(best, "feature_names_in_"):
            self.feature_names_in_ = best.feature_names_in_

    # ---- parameters ----------------------------------------------------------------------------

    def _check_params(self):
        if not (self.error_score == "raise" or isinstance(self.error_score, numbers.Real)):
            raise ValueError("error_score must be the string 'raise' or a numeric value. (Hint: if using 'raise', "
                             "please make sure that it has been spelled correctly.)")
        size = self.group_size
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1:
            raise ValueError(f"group_size must be an integer >= 1, got {self.group_size!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")

    def _scorers(self):
        """(scorer or {name: scorer}, refit metric) by sklearn's rules."""
        if callable(self.scoring):
            return self.scoring, "score"
        if self.scoring is None or isinstance(self.scoring, str):
            return check_scoring(self.estimator, self.scoring), "score"
        if isinstance(self.scoring, dict):
            scorers = {name: get_scorer(s) if isinstance(s, str) else s for name, s in self.scoring.items()}
        elif isinstance(self.scoring, (list, tuple, set)):
            names = list(self.scoring)
            if len(set(names)) != len(names) or not all(isinstance(s, str) for s in names):
                raise ValueError(f"The list/tuple elements must be unique strings of predefined scorers. Got {names}")
            scorers = {name: get_scorer(name) for name in names}
        else:
            raise ValueError(f"scoring must be a str, a callable, a list, a tuple, a dict or None; "
                             f"got {self.scoring!r}")
        if not scorers:
            raise ValueError(f"An empty {type(self.scoring).__name__} was passed: {self.scoring!r}")
        self._check_refit_for_multimetric(scorers)
        return scorers, self.refit

    def _check_refit_for_multimetric(self, names):
        if self.refit is not False and not (isinstance(self.refit, str) and self.refit in names) \
                and not callable(self.refit):
            raise ValueError("For multi-metric scoring, the parameter refit must be set to a scorer key or a callable "
                             "to refit an estimator with the best parameter setting on the whole data and make the "
                             f"best_* attributes available for that metric. If this is not needed, refit should be "
                             f"set to False explicitly. {self.refit!r} was passed.")

    # ---- the refit estimator's methods -----------------------------------------------------------

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        return tags

    def score(self, X, y=None):
        """The refit metric's score of best_estimator_ on X, y (the estimator's score without scoring)."""
        check_is_fitted(self, "best_estimator_")
        scorer = self.scorer_[self.refit] if isinstance(self.scorer_, dict) else self.scorer_
        value = scorer(self.best_estimator_, X, y)
        return value[self.refit] if isinstance(value, dict) else value

    @available_if(_has("predict"))
    def predict(self, X):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

    @available_if(_has("predict_proba"))
    def predict_proba(self, X):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_proba(X)

    @available_if(_has("predict_log_proba"))
    def predict_log_proba(self, X):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_log_proba(X)

    @available_if(_has("decision_function"))
    def decision_function(self, X):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.decision_function(X)

    @available_if(_has("transform"))
    def transform(self, X):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.transform(X)

    @property
    def classes_(self):
        _has("classes_")(self)
        return self.best_estimator_.classes_

    @property
    def n_features_in_(self):
        if not hasattr(self, "best_estimator_"):
            raise AttributeError(f"{type(self).__name__} object has no n_features_in_ attribute.")
        return self.best_estimator_.n_features_in_


class GridSearchCV(_BaseSearch):
    """scikit-learn's GridSearchCV with tasks on rank groups; see docs/search.md.

    group_size: ranks per fit (must divide the number of ranks). allocation: "dynamic" (a
    coordinator hands out tasks, longest expected first) or "round-robin" (task i to group
    i mod G). checkpoint: a directory where each finished task is recorded; a search started
    again with the same directory runs only the unfinished tasks.
    """

    def __init__(self, estimator, param_grid, *, scoring=None, cv=5, refit=True, error_score=np.nan,
                 return_train_score=False, verbose=0, group_size=1, allocation="dynamic", checkpoint=None):
        self.estimator = estimator
        self.param_grid = param_grid
        self.scoring = scoring
        self.cv = cv
        self.refit = refit
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.verbose = verbose
        self.group_size = group_size
        self.allocation = allocation
        self.checkpoint = checkpoint

    def _candidates(self, comm):
        return ParameterGrid(self.param_grid)


class RandomizedSearchCV(_BaseSearch):
    """scikit-learn's RandomizedSearchCV with tasks on rank groups (GridSearchCV's extra
    parameters); every rank samples what rank 0 samples, whatever random_state is."""

    def __init__(self, estimator, param_distributions, *, n_iter=10, scoring=None, cv=5, refit=True,
                 error_score=np.nan, return_train_score=False, verbose=0, random_state=None, group_size=1,
                 allocation="dynamic", checkpoint=None):
        self.estimator = estimator
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.scoring = scoring
        self.cv = cv
        self.refit = refit
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.verbose = verbose
        self.random_state = random_state
        self.group_size = group_size
        self.allocation = allocation
        self.checkpoint = checkpoint

    def _candidates(self, comm):
        if comm.size > 1 and not isinstance(self.random_state, numbers.Integral):
            from mpinn.parallel.agree import share_random_state
            from mpinn.data.inputs import check_random_state

            share_random_state(check_random_state(self.random_state), comm)
        return ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state)


# ---- helpers -----------------------------------------------------------------------------------


def _n_features(X):
    shape = getattr(X, "shape", None)
    return int(shape[1]) if shape is not None and len(shape) > 1 else 1


def _per_sample(value, n):
    return hasattr(value, "__len__") and not isinstance(value, (str, dict)) and len(value) == n


def _splits_from_root(comm, cv, X, y, groups):
    """The folds rank 0 draws (a shuffled splitter without a seed would differ per rank); an
    error in cv.split (too few rows for the folds ...) is raised on every rank."""
    splits = []

    def draw():
        splits.extend(cv.split(X, y, groups))
        return [[len(a), len(b)] for a, b in splits]

    sizes = on_root(comm, draw)
    if comm.size == 1:
        return [(np.asarray(a, np.int64), np.asarray(b, np.int64)) for a, b in splits]
    flat = np.concatenate([np.concatenate([a, b]) for a, b in splits]).astype(np.int64) if comm.rank == 0 \
        else np.empty(sum(a + b for a, b in sizes), np.int64)
    comm.bcast_array(flat)
    out, at = [], 0
    for a, b in sizes:
        out.append((flat[at:at + a], flat[at + a:at + a + b]))
        at += a + b
    return out
