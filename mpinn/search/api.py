"""GridSearchCV and RandomizedSearchCV whose tasks (candidate x fold) run on groups of ranks.

scikit-learn's search, data-parallel: under ``mpiexec -n N`` the ranks form N / group_size
groups, each task is one fit on its group (mpinn's estimators train data-parallel on the
group's communicator), and the scores are aggregated exactly as scikit-learn aggregates them.
The candidates (ParameterGrid, ParameterSampler), the folds (check_cv) and the scorers
(check_scoring, get_scorer) are scikit-learn's own, so ``cv_results_`` has its keys and values
whatever N, group_size and the allocation. The classes derive from scikit-learn's BaseSearchCV
and replace only its fit, so its delegated methods, tags, routing and callbacks are the real
ones; scikit-learn's own test_search.py runs against them (tests/test_sklearn_search_suite.py).
Needs scikit-learn. See docs/search.md.
"""

from __future__ import annotations

import numbers
import time

import numpy as np
from sklearn.base import _fit_context, clone, is_classifier
from sklearn.metrics._scorer import _MultimetricScorer
from sklearn.model_selection import GridSearchCV as _SklearnGrid
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.model_selection import RandomizedSearchCV as _SklearnRandomized
from sklearn.model_selection._search import BaseSearchCV
from sklearn.utils import indexable
from sklearn.utils.validation import _check_method_params

from mpinn.search import results as search_results
from mpinn.search import tasks as search_tasks
from mpinn.parallel.comm import as_comm
from mpinn.search.tasklog import TaskLog, new_run_id
from mpinn.parallel.agree import on_root
from mpinn.parallel.digest import data_digest
from mpinn.parallel.faults import Preemption
from mpinn.search.iteration import splits_from_root
from mpinn.search.run import ALLOCATIONS, Groups, collect, run_tasks
from mpinn.search.stopping import finish
from mpinn.search import callbacks as search_callbacks


class _BaseSearch(BaseSearchCV):
    """fit on the rank groups; the rest is scikit-learn's BaseSearchCV (the methods delegated to
    best_estimator_, score, tags, metadata routing, callbacks, the html repr)."""

    def _candidates(self, comm):
        raise NotImplementedError

    # ---- fit --------------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=False)  # scikit-learn's parameter checks, callback teardown
    def fit(self, X, y=None, **params):
        """Run every task (candidate x fold) on the rank groups, then refit the best candidate on
        all ranks. Every rank passes the same X, y and parameters (as for mpinn's estimators).
        ``params`` go where scikit-learn sends them: ``groups`` to the splitter, the rest to the
        estimator's fit (and sample_weight to scorers that take it), or by metadata routing."""
        self._check_params()
        base, saved_comms = search_tasks.clone_without_comm(self.estimator)
        world = as_comm(search_tasks.search_comm_value(saved_comms))
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)
        weight = params.get("sample_weight")
        metadata = None if weight is None else {"sample_weight": weight}
        hooks = search_callbacks.root_context(self, self.refit)
        hooks.call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self.n_splits_ = cv.get_n_splits(X, y, **routed.splitter.split)
        splits = splits_from_root(world, cv, X, y, routed.splitter.split)
        if len(splits) != self.n_splits_:
            raise ValueError(f"cv.split and cv.get_n_splits return inconsistent results. Expected "
                             f"{self.n_splits_} splits, got {len(splits)}")
        candidates = list(self._candidates(world))
        n_tasks = len(candidates) * self.n_splits_
        if n_tasks < 1:
            raise ValueError("No fits were performed. Was the CV iterator empty? Were there no candidates?")
        fit_params = {k: v for k, v in routed.estimator.fit.items() if v is not None}
        log = TaskLog(self.checkpoint, self._fingerprint(world, base, candidates, splits, X, y)) \
            if self.checkpoint is not None else None
        previous = self._previous_records(world, log, candidates)
        pending = [t for t in range(n_tasks) if t not in previous]
        self.tasks_resumed_, self.tasks_run_ = len(previous), len(pending)
        n_outputs = max(1, len(np.unique(np.asarray(y)))) if is_classifier(self.estimator) and y is not None else 1
        n_outputs = 1 if n_outputs == 2 else n_outputs
        per_row = [search_tasks.expected_cost(clone(base).set_params(**clone(c, safe=False)), 1, _n_features(X),
                                              n_outputs) for c in candidates]  # cloned: c may hold estimators
        costs = [per_row[t // self.n_splits_] * len(splits[t % self.n_splits_][0]) for t in range(n_tasks)]
        if self.verbose > 0 and world.rank == 0:
            print(f"Fitting {self.n_splits_} folds for each of {len(candidates)} candidates, totalling {n_tasks} "
                  f"fits ({len(previous)} done before) on {world.size} rank(s) in groups of {self.group_size}, "
                  f"allocation {self.allocation}", flush=True)
        search_hooks, task_hooks = search_callbacks.task_contexts(hooks, self, n_tasks)
        with Groups(world, self.group_size) as team:  # on a rank's death: revoked, no survivor left waiting
            run_id = world.bcast_json(new_run_id()) if log else None  # collective: before any branch
            # A signal during the search sets a flag (its fits share it): the tasks stop at the next
            # step or task boundary, the finished ones are on disk, and every rank raises Preempted
            # (SIGTERM, SIGUSR1) or Interrupted (SIGINT); the interrupted tasks rerun on resume.
            with Preemption.watch() as signals:
                writer = log.writer(run_id, team.index) if log and team.leader else None
                execute = self._executor(team, base, candidates, splits, X, y, fit_params, scorers, writer,
                                         score_params=routed.scorer.score, hooks=task_hooks)
                records, stop = run_tasks(team, pending, costs, self.allocation, execute, progress=self._progress,
                                          stop_requested=lambda: signals.requested)
                if writer:
                    writer.close()
                finish(team, stop)  # every rank raises the first failing group's error, or none does
            records = collect(team, records, previous)
        search_hooks.call_on_fit_task_end(estimator=self)
        ordered = [records[t] for t in range(n_tasks)]
        search_results.fit_failures(ordered, self.error_score)
        results = search_results.format_results(candidates, self.n_splits_, ordered, self.error_score,
                                                self.return_train_score)
        names = search_results.scorer_names(ordered)
        self.multimetric_ = isinstance(scorers, _MultimetricScorer) or names != ["score"]
        if callable(self.scoring) and self.multimetric_:
            self._check_refit_for_multimetric(names)
            refit_metric = self.refit
        self._select_best(results, refit_metric)
        if self.refit:
            self._refit(base, saved_comms, X, y, fit_params, world, hooks=hooks, metadata=metadata)
        self.scorer_ = scorers._scorers if isinstance(scorers, _MultimetricScorer) else scorers
        self.cv_results_ = results
        hooks.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata)
        return self

    def _fingerprint(self, world, base, candidates, splits, X, y):
        """Collective: what must not change for a checkpoint's records to be reused (not comm or
        checkpoint). The data by its digest, each rank hashing 1/N of it."""
        return search_tasks.fingerprint(
            [search_tasks.describe(c) for c in candidates] + [a for split in splits for a in split]
            + [search_tasks.describe(self.scoring), repr(search_tasks.for_task(clone(base), None)),
               self.return_train_score, data_digest(world, [X, y])])

    def _executor(self, team, base, candidates, splits, X, y, fit_params, scorers, writer, score_params=None,
                  hooks=None):
        """execute(task) on every rank of the task's group: the record on its leader. ``hooks``:
        one callback context per task (callbacks.py), or None."""
        def execute(t):
            c, k = divmod(t, self.n_splits_)
            if self._task_hook:
                self._task_hook()
            est = search_tasks.for_task(clone(base).set_params(**clone(candidates[c], safe=False)), team.comm)
            train, test = splits[k]
            record = search_tasks.fit_and_score(
                est, X, y, train, test, scorers=scorers, fit_params=fit_params, error_score=self.error_score,
                return_train_score=self.return_train_score, agree=team.comm.any_error, score=team.leader,
                score_params=score_params, hooks=None if hooks is None else hooks[t], caller=self)
            if writer:
                writer.append(t, {"candidate": c, "split": k, **record})
            if self.verbose > 1 and team.leader:
                print(search_tasks.end_line(candidates[c], (k, self.n_splits_), (c, len(candidates)), record,
                                            self.verbose, self.return_train_score), flush=True)
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

    def _refit(self, base, saved_comms, X, y, fit_params, world, hooks=None, metadata=None):
        """The best candidate on all the data, data-parallel on all the search's ranks (with the
        estimator's own comm and checkpoint parameters): the same best_estimator_ on every rank.
        An estimator that is not mpinn's is fitted on each rank, as scikit-learn fits it.
        ``hooks``: the search's root callback context, or None."""
        best = clone(base).set_params(**clone(self.best_params_, safe=False))
        if any(v is not None for v in saved_comms.values()):
            best.set_params(**saved_comms)
        hooks = (search_callbacks.Silent() if hooks is None else hooks).subcontext(task_name="refit-with-best-params")
        start = time.time()
        with hooks.propagate_callback_context(best):
            hooks.call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata)
            best.fit(X, **fit_params) if y is None else best.fit(X, y, **fit_params)
        self.refit_time_ = time.time() - start
        hooks.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata)
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
        """(scorer, or scikit-learn's _MultimetricScorer for several, refit metric) by sklearn's rules."""
        return self._get_scorers()


class GridSearchCV(_BaseSearch):
    """scikit-learn's GridSearchCV with tasks on rank groups; see docs/search.md.

    n_jobs, pre_dispatch: accepted and ignored; the ranks are the workers.
    group_size: ranks per fit (must divide the number of ranks). allocation: "dynamic" (a
    coordinator hands out tasks, longest expected first) or "round-robin" (task i to group
    i mod G). checkpoint: a directory where each finished task is recorded; a search started
    again with the same directory runs only the unfinished tasks.
    """

    _parameter_constraints = dict(_SklearnGrid._parameter_constraints)  # checked in fit, as scikit-learn's

    def __init__(self, estimator, param_grid, *, scoring=None, n_jobs=None, refit=True, cv=5, verbose=0,
                 pre_dispatch="2*n_jobs", error_score=np.nan, return_train_score=False, group_size=1,
                 allocation="dynamic", checkpoint=None):
        self.estimator = estimator
        self.param_grid = param_grid
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.pre_dispatch = pre_dispatch
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

    _parameter_constraints = dict(_SklearnRandomized._parameter_constraints)

    def __init__(self, estimator, param_distributions, *, n_iter=10, scoring=None, n_jobs=None, refit=True,
                 cv=5, verbose=0, pre_dispatch="2*n_jobs", random_state=None, error_score=np.nan,
                 return_train_score=False, group_size=1, allocation="dynamic", checkpoint=None):
        self.estimator = estimator
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.pre_dispatch = pre_dispatch
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
