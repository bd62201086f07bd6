"""HalvingGridSearchCV and HalvingRandomSearchCV: scikit-learn's successive halving, each round's
tasks (candidate x fold) run on the rank groups as GridSearchCV runs its tasks (iteration.py).

Everything that decides the numbers is scikit-learn's rule, written out as in
sklearn/model_selection/_search_successive_halving.py: min_resources_ / max_resources_, the
number of iterations, the resources of each, the subsampled folds of resource="n_samples"
(sklearn.utils.resample seeded with random_state, train and test rows), the candidates kept
(the ceil(n / factor) best by mean test score, NaN scores last, ties as numpy's argsort) and the
best one (the last iteration's nanargmax). So ``cv_results_`` (with ``iter`` and
``n_resources``) equals scikit-learn's whatever the rank count, group size and allocation.

A checkpoint directory holds one task log per iteration (iter-0, iter-1, ...): a search
started again runs only the unfinished tasks, and the iterations already done give the same
candidates again. ``warm_start_promoted`` (resource="max_iter") is warm.py's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from math import ceil, floor, log
from numbers import Integral, Real

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.metrics._scorer import get_scorer_names
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.utils import indexable, resample
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _num_samples

from mpinn.parallel.agree import on_root
from mpinn.parallel.comm import as_comm
from mpinn.parallel.digest import data_digest
from mpinn.parallel.faults import Preemption
from mpinn.search import results as search_results
from mpinn.search import tasks as search_tasks
from mpinn.search.api import _BaseSearch
from mpinn.search.iteration import Round, run_round, splits_from_root, task_costs
from mpinn.search.run import ALLOCATIONS, Groups
from mpinn.search.tasklog import TaskLog, new_run_id
from mpinn.search.warm import MODELS, PromotedModels, epoch_recorder, mlp_path


class SubsampleSplitter:
    """The folds of ``base_cv`` with ``fraction`` of each fold's train and test rows, drawn by
    sklearn.utils.resample with ``random_state`` (scikit-learn's _SubsampleMetaSplitter)."""

    def __init__(self, *, base_cv, fraction, subsample_test, random_state):
        self.base_cv, self.fraction = base_cv, fraction
        self.subsample_test, self.random_state = subsample_test, random_state

    def split(self, X, y, groups=None):
        for train, test in self.base_cv.split(X, y, groups):
            train = resample(train, replace=False, random_state=self.random_state,
                             n_samples=int(self.fraction * len(train)))
            if self.subsample_test:
                test = resample(test, replace=False, random_state=self.random_state,
                                n_samples=int(self.fraction * len(test)))
            yield train, test


def top_k(results, k, itr):
    """The rows of cv_results_ of the k best candidates of iteration ``itr``, worst first (NaN
    scores count as the worst), in scikit-learn's _top_k order."""
    iteration, mean_test_score = np.asarray(results["iter"]), np.asarray(results["mean_test_score"])
    iter_indices = np.flatnonzero(iteration == itr)
    scores = mean_test_score[iter_indices]
    # argsort puts NaNs last: rolled to the front, so the last k are the best
    sorted_indices = np.roll(np.argsort(scores), np.count_nonzero(np.isnan(scores)))
    return iter_indices[sorted_indices[-k:]]


def best_of_last_iteration(results):
    """The best candidate of the last iteration (all NaN: its first one)."""
    last = np.flatnonzero(results["iter"] == np.max(results["iter"]))
    scores = results["mean_test_score"][last]
    return int(last[0 if np.isnan(scores).all() else np.nanargmax(scores)])


def _yields_constant_splits(cv):
    shuffle = getattr(cv, "shuffle", True)
    return isinstance(getattr(cv, "random_state", 0), Integral) or not shuffle


class _BaseHalving(_BaseSearch):
    """Successive halving's fit; subclasses give the candidates."""

    _parameter_constraints: dict = {
        "scoring": [StrOptions(set(get_scorer_names())), callable, None],
        "max_resources": [Interval(Integral, 0, None, closed="neither"), StrOptions({"auto"})],
        "min_resources": [Interval(Integral, 0, None, closed="neither"), StrOptions({"exhaust", "smallest"})],
        "resource": [str],
        "factor": [Interval(Real, 0, None, closed="neither")],
        "aggressive_elimination": ["boolean"],
        "warm_start_promoted": ["boolean"],
        "estimator": [HasMethods(["fit"])],
        "refit": ["boolean", str, callable],
        "cv": ["cv_object"],
        "error_score": [StrOptions({"raise"}), Real],
        "return_train_score": ["boolean"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def _generate_candidate_params(self, world):
        raise NotImplementedError

    @staticmethod
    def _select_best_index(refit, refit_metric, results):
        """scikit-learn's hook: the best candidate of the last iteration."""
        return best_of_last_iteration(results)

    def fit(self, X, y=None, *, groups=None, **fit_params):
        """Run the iterations, each one's tasks on the rank groups, then refit the best candidate
        on all ranks. Every rank passes the same X, y."""
        self._validate_params()
        self._check_params()
        if self.warm_start_promoted and not self.resource.endswith("max_iter"):
            raise ValueError(f"warm_start_promoted=True needs the epochs as the resource (resource='max_iter'), "
                             f"got resource={self.resource!r}: a model trained on other rows cannot be continued")
        base, saved_comms = search_tasks.clone_without_comm(self.estimator)
        world = as_comm(search_tasks.search_comm_value(saved_comms))
        scorer = check_scoring(self.estimator, self.scoring)
        X, y, groups = indexable(X, y, groups)
        self._n_samples_orig = _num_samples(X)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self.n_splits_ = cv.get_n_splits(X, y, groups)
        self._check_input_parameters(cv, X, y, groups)
        candidates = list(self._generate_candidate_params(world))
        fit_params = {k: v for k, v in fit_params.items() if v is not None}
        if self.resource != "n_samples" and any(self.resource in c for c in candidates):
            raise ValueError(f"Cannot use parameter {self.resource} as the resource since it is part of the "
                             "searched parameters.")
        self._plan(len(candidates), world.rank == 0)
        n_outputs = _n_outputs(self.estimator, y)
        # The data's digest, once for every iteration's task log (collective; each rank hashes 1/N).
        data_id = data_digest(world, [X, y]) if self.checkpoint is not None else None
        all_candidates, all_records, more = [], [], {"iter": [], "n_resources": []}
        self.n_resources_, self.n_candidates_ = [], []
        self.tasks_resumed_ = self.tasks_run_ = 0
        origins, all_origins = list(range(len(candidates))), []  # each candidate's first-iteration index
        results = models = None
        mlp = mlp_path(base)  # where the mpinn MLP is in the estimator (its epochs are counted)
        with Groups(world, self.group_size) as team:  # on a rank's death: revoked, no survivor left waiting
            try:
                run_id = world.bcast_json(new_run_id())  # collective: before any branch
                if self.warm_start_promoted:
                    models = PromotedModels(self._models_directory(world))
                with Preemption.watch() as signals:
                    for itr in range(self.n_iterations_):
                        n_candidates = len(candidates)
                        power = itr
                        if self.aggressive_elimination:  # the first resources until enough are eliminated
                            power = max(0, itr - self.n_required_iterations_ + self.n_possible_iterations_)
                        n_resources = min(int(self.factor ** power * self.min_resources_), self.max_resources_)
                        self.n_resources_.append(n_resources)
                        self.n_candidates_.append(n_candidates)
                        if self.verbose and world.rank == 0:
                            print(f"----------\niter: {itr}\nn_candidates: {n_candidates}\nn_resources: {n_resources}",
                                  flush=True)
                        if self.resource == "n_samples":
                            split_cv = SubsampleSplitter(base_cv=cv, fraction=n_resources / self._n_samples_orig,
                                                         subsample_test=True, random_state=self.random_state)
                        else:
                            candidates = [dict(c) for c in candidates]
                            for c in candidates:
                                c[self.resource] = n_resources
                            split_cv = cv
                        splits = splits_from_root(world, split_cv, X, y, {"groups": groups})
                        if len(splits) != self.n_splits_:
                            raise ValueError(f"cv.split and cv.get_n_splits return inconsistent results. Expected "
                                             f"{self.n_splits_} splits, got {len(splits)}")
                        prepare, after = models.hooks(origins, mlp) if models else (None, epoch_recorder(mlp))
                        rnd = Round(candidates, splits, name=f"iter {itr} ", prepare_task=prepare, after_task=after)
                        rnd.log = self._round_log(base, rnd, itr, data_id)
                        costs = task_costs(base, candidates, splits, _n_features(X), n_outputs)
                        if self.verbose > 0 and world.rank == 0:
                            print(f"Fitting {self.n_splits_} folds for each of {n_candidates} candidates, totalling "
                                  f"{rnd.n_tasks} fits", flush=True)
                        records, (resumed, ran) = run_round(
                            self, team, rnd, base, X, y, fit_params, scorer, run_id=run_id, signals=signals,
                            description={"candidates": n_candidates, "splits": self.n_splits_, "iter": itr,
                                         "class": type(self).__name__},
                            costs=costs, task_hook=self._task_hook, progress=self._progress)
                        self.tasks_resumed_ += resumed
                        self.tasks_run_ += ran
                        search_results.fit_failures(records, self.error_score)
                        all_candidates.extend(candidates)
                        all_origins.extend(origins)
                        all_records.extend(records)
                        more["iter"] += [itr] * n_candidates
                        more["n_resources"] += [n_resources] * n_candidates
                        results = self._format(all_candidates, all_records, more)
                        kept = top_k(results, ceil(n_candidates / self.factor), itr)
                        candidates = [results["params"][r] for r in kept]
                        origins = [all_origins[r] for r in kept]
                        if models is not None and itr + 1 < self.n_iterations_:
                            models.keep(world, origins)
            finally:
                if models is not None and self.checkpoint is None and world.rank == 0:
                    shutil.rmtree(models.directory, ignore_errors=True)
        self.epochs_trained_ = sum(r.get("epochs_trained", 0) for r in all_records)
        self.n_remaining_candidates_ = len(candidates)
        self.multimetric_ = search_results.scorer_names(all_records) != ["score"]
        self.best_index_ = self._select_best_index(self.refit, "score", results)
        self.best_params_ = results["params"][self.best_index_]
        self.best_score_ = results["mean_test_score"][self.best_index_]
        if self.refit:
            self._refit_best(base, saved_comms, X, y, fit_params)
        self.scorer_ = scorer
        self.cv_results_ = results
        return self

    # ---- scikit-learn's rules ---------------------------------------------------------------------

    def _check_input_parameters(self, cv, X, y, groups):
        """min_resources_ and max_resources_ as BaseSuccessiveHalving._check_input_parameters."""
        if not _yields_constant_splits(cv):
            raise ValueError("The cv parameter must yield consistent folds across calls to split(). Set its "
                             "random_state to an int, or set shuffle=False.")
        if self.resource != "n_samples" and self.resource not in self.estimator.get_params():
            raise ValueError(f"Cannot use resource={self.resource} which is not supported by estimator "
                             f"{self.estimator.__class__.__name__}")
        if isinstance(self, HalvingRandomSearchCV) and self.min_resources == self.n_candidates == "exhaust":
            raise ValueError("n_candidates and min_resources cannot be both set to 'exhaust'.")
        self.min_resources_ = self.min_resources
        if self.min_resources_ in ("smallest", "exhaust"):
            if self.resource == "n_samples":
                self.min_resources_ = self.n_splits_ * 2  # scikit-learn's "magic factor"
                if is_classifier(self.estimator):
                    y_checked = np.asarray(y)
                    check_classification_targets(y_checked)
                    self.min_resources_ *= np.unique(y_checked).shape[0]
            else:
                self.min_resources_ = 1
        self.max_resources_ = self.max_resources
        if self.max_resources_ == "auto":
            if self.resource != "n_samples":
                raise ValueError("resource can only be 'n_samples' when max_resources='auto'")
            self.max_resources_ = _num_samples(X)
        if self.min_resources_ > self.max_resources_:
            raise ValueError(f"min_resources_={self.min_resources_} is greater than "
                             f"max_resources_={self.max_resources_}.")
        if self.min_resources_ == 0:
            raise ValueError(f"min_resources_={self.min_resources_}: you might have passed an empty dataset X.")

    def _plan(self, n_candidates, prints):
        """n_required_iterations_, n_possible_iterations_, n_iterations_ (and min_resources_ for
        'exhaust') as BaseSuccessiveHalving._run_search."""
        self.n_required_iterations_ = 1 + floor(log(n_candidates, self.factor))
        if self.min_resources == "exhaust":  # the last required iteration uses as many resources as possible
            last_iteration = self.n_required_iterations_ - 1
            self.min_resources_ = max(self.min_resources_, self.max_resources_ // self.factor ** last_iteration)
        self.n_possible_iterations_ = 1 + floor(log(self.max_resources_ // self.min_resources_, self.factor))
        if self.aggressive_elimination:
            self.n_iterations_ = self.n_required_iterations_
        else:
            self.n_iterations_ = min(self.n_possible_iterations_, self.n_required_iterations_)
        if self.verbose and prints:
            print(f"n_iterations: {self.n_iterations_}\nn_required_iterations: {self.n_required_iterations_}\n"
                  f"n_possible_iterations: {self.n_possible_iterations_}\nmin_resources_: {self.min_resources_}\n"
                  f"max_resources_: {self.max_resources_}\naggressive_elimination: {self.aggressive_elimination}\n"
                  f"factor: {self.factor}", flush=True)

    def _format(self, candidates, records, more):
        """cv_results_ over every iteration so far, ``iter`` and ``n_resources`` first (sklearn's order)."""
        formatted = search_results.format_results(candidates, self.n_splits_, records, self.error_score,
                                                  self.return_train_score)
        return {**{key: np.asarray(value) for key, value in more.items()}, **formatted}

    # ---- checkpoint, refit --------------------------------------------------------------------------

    def _round_log(self, base, rnd, itr, data_id):
        """This iteration's task log, iter-<i> in the checkpoint directory, named by everything
        its records depend on (candidates with their resources, folds, scoring, estimator, the
        data's digest ``data_id``)."""
        if self.checkpoint is None:
            return None
        parts = [itr, [search_tasks.describe(c) for c in rnd.candidates], *[a for s in rnd.splits for a in s],
                 search_tasks.describe(self.scoring), repr(search_tasks.for_task(clone(base), None)),
                 self.return_train_score, self.warm_start_promoted, data_id]
        return TaskLog(os.path.join(os.fspath(self.checkpoint), f"iter-{itr}"), search_tasks.fingerprint(parts))

    def _models_directory(self, world):
        """Where warm_start_promoted keeps each task's run: <checkpoint>/models, or a temporary
        directory of rank 0 (every rank must see it: one node), removed after the search."""
        def make():
            if self.checkpoint is None:
                return tempfile.mkdtemp(prefix="mpinn-halving-")
            path = os.path.join(os.fspath(self.checkpoint), MODELS)
            os.makedirs(path, exist_ok=True)
            return path
        return on_root(world, make)

    def _refit_best(self, base, saved_comms, X, y, fit_params):
        """The best candidate on all the data, data-parallel on all the search's ranks."""
        best = clone(base).set_params(**clone(self.best_params_, safe=False))
        if any(v is not None for v in saved_comms.values()):
            best.set_params(**saved_comms)
        start = time.time()
        best.fit(X, **fit_params) if y is None else best.fit(X, y, **fit_params)
        self.refit_time_ = time.time() - start
        self.best_estimator_ = best
        if hasattr(best, "feature_names_in_"):
            self.feature_names_in_ = best.feature_names_in_

    def _check_params(self):
        if not (self.error_score == "raise" or isinstance(self.error_score, Real)):
            raise ValueError("error_score must be the string 'raise' or a numeric value. (Hint: if using 'raise', "
                             "please make sure that it has been spelled correctly.)")
        size = self.group_size
        if not isinstance(size, Integral) or isinstance(size, bool) or size < 1:
            raise ValueError(f"group_size must be an integer >= 1, got {self.group_size!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")


class HalvingGridSearchCV(_BaseHalving):
    """scikit-learn's HalvingGridSearchCV with each iteration's tasks on rank groups; see
    docs/search.md. group_size, allocation, checkpoint: as GridSearchCV's. n_jobs: accepted,
    unused (ranks give the parallelism). warm_start_promoted: with resource="max_iter", a
    promoted candidate's fold continues the model of its previous iteration."""

    _parameter_constraints: dict = {**_BaseHalving._parameter_constraints, "param_grid": [dict, list]}

    def __init__(self, estimator, param_grid, *, factor=3, resource="n_samples", max_resources="auto",
                 min_resources="exhaust", aggressive_elimination=False, cv=5, scoring=None, refit=True,
                 error_score=np.nan, return_train_score=True, random_state=None, n_jobs=None, verbose=0,
                 group_size=1, allocation="dynamic", checkpoint=None, warm_start_promoted=False):
        self.estimator = estimator
        self.param_grid = param_grid
        self.factor = factor
        self.resource = resource
        self.max_resources = max_resources
        self.min_resources = min_resources
        self.aggressive_elimination = aggressive_elimination
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.group_size = group_size
        self.allocation = allocation
        self.checkpoint = checkpoint
        self.warm_start_promoted = warm_start_promoted

    def _generate_candidate_params(self, world):
        return ParameterGrid(self.param_grid)


class HalvingRandomSearchCV(_BaseHalving):
    """scikit-learn's HalvingRandomSearchCV with each iteration's tasks on rank groups
    (HalvingGridSearchCV's extra parameters); every rank samples what rank 0 samples."""

    _parameter_constraints: dict = {
        **_BaseHalving._parameter_constraints,
        "param_distributions": [dict, list],
        "n_candidates": [Interval(Integral, 0, None, closed="neither"), StrOptions({"exhaust"})],
    }

    def __init__(self, estimator, param_distributions, *, n_candidates="exhaust", factor=3, resource="n_samples",
                 max_resources="auto", min_resources="smallest", aggressive_elimination=False, cv=5, scoring=None,
                 refit=True, error_score=np.nan, return_train_score=True, random_state=None, n_jobs=None,
                 verbose=0, group_size=1, allocation="dynamic", checkpoint=None, warm_start_promoted=False):
        self.estimator = estimator
        self.param_distributions = param_distributions
        self.n_candidates = n_candidates
        self.factor = factor
        self.resource = resource
        self.max_resources = max_resources
        self.min_resources = min_resources
        self.aggressive_elimination = aggressive_elimination
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.group_size = group_size
        self.allocation = allocation
        self.checkpoint = checkpoint
        self.warm_start_promoted = warm_start_promoted

    def _generate_candidate_params(self, world):
        n = self.n_candidates
        if n == "exhaust":  # enough candidates for the last iteration to use as many resources as possible
            n = self.max_resources_ // self.min_resources_
        if world.size > 1 and not isinstance(self.random_state, Integral):
            from mpinn.data.inputs import check_random_state
            from mpinn.parallel.agree import share_random_state

            share_random_state(check_random_state(self.random_state), world)
        return ParameterSampler(self.param_distributions, n, random_state=self.random_state)


def _n_features(X):
    shape = getattr(X, "shape", None)
    return int(shape[1]) if shape is not None and len(shape) > 1 else 1


def _n_outputs(estimator, y):
    if not is_classifier(estimator) or y is None:
        return 1
    n = max(1, len(np.unique(np.asarray(y))))
    return 1 if n == 2 else n
