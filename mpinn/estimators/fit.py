"""How MLPClassifier and MLPRegressor fit: this rank's shard, init, L-BFGS or stochastic training.

Reads the data down to this rank's rows (reading.py), draws the first
weights in sklearn's order, holds out sklearn's early-stopping rows and drives the same Trainer
as the CLI (train/loop.py). MPI only through parallel/comm.py, imported when fit runs.
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings

import numpy as np

from mpinn.data import columns, inputs
from mpinn.errors import warnings_shown_by_rank0
from mpinn.parallel.agree import share_random_state
from mpinn.estimators.base import STOCHASTIC, _BaseMLP
from mpinn.estimators.reading import _ReadsRows
from mpinn.nn.model import MLP


class _FitMLP(_ReadsRows, _BaseMLP):
    """fit and the fitting steps partial_fit shares; the subclasses supply _output and _targets."""

    # ---- fit ------------------------------------------------------------------------------

    def fit(self, X, y=None, sample_weight=None):
        """Train on X, y (the same global arrays on every rank, or an HDF5 path); returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental):
        """Stochastic solvers watch SIGTERM, SIGUSR1 and SIGINT for the whole fit, data loading
        included (faults.Preemption.watch; the previous handlers are put back after): every rank
        stops at the same step. SIGTERM/SIGUSR1 raise Preempted (after the checkpoint, if one is
        configured); SIGINT keeps the model trained so far, as scikit-learn does on Ctrl-C.
        lbfgs (scipy) keeps Python's own signal behaviour."""
        from mpinn.parallel.faults import Preemption

        if self.solver not in STOCHASTIC:
            return self._fit_watched(X, y, sample_weight, incremental)
        with Preemption.watch():
            return self._fit_watched(X, y, sample_weight, incremental)

    def _fit_watched(self, X, y, sample_weight, incremental):
        hidden = self._validate_params()
        comm = self._get_comm()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        names = None
        if columns.is_table(X):  # as scikit-learn: string column names are kept as feature_names_in_
            if not first_pass and getattr(self, "feature_names_in_", None) is not None:
                X = self._by_name(X)  # continuing: taken by name, as predict does
            elif all(isinstance(c, str) for c in X.columns):
                names = [str(c) for c in X.columns]
        Xl, yl, wl, shard, n_rows, y_all = self._read(X, y, sample_weight, comm)
        if first_pass:  # a loaded `mpinn train --scale` model's scaling belongs to its old weights
            self.__dict__.pop("scaler_", None)
        elif getattr(self, "scaler_", None) is not None:  # continue in the space it was trained in
            Xl = self.scaler_.transform_inplace(np.array(Xl))
        if n_rows < 1:
            raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
        n_features = Xl.shape[1]
        if first_pass:
            self.n_features_in_ = n_features
            self.__dict__.pop("encoding_", None)
            if names is None:
                self.__dict__.pop("feature_names_in_", None)
            else:
                self.feature_names_in_ = np.asarray(names, dtype=object)
        elif n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        dtype = Xl.dtype
        Yl, wl = self._targets(yl, y_all, wl, comm, incremental, dtype)
        n_outputs = Yl.shape[1]
        self.n_outputs_ = n_outputs
        layer_units = [n_features, *hidden, n_outputs]
        rs = inputs.check_random_state(self.random_state)
        if comm.size > 1 and not isinstance(self.random_state, numbers.Integral):
            share_random_state(rs, comm)  # every rank draws what rank 0 would
        if first_pass:
            self._initialize(layer_units, dtype, rs)
        model = MLP(layer_units, self.activation, self.out_activation_, dtype=dtype)
        params = self._flat(model)
        checkpointer = self._checkpointer(comm)
        from mpinn.train.config import config_from_estimator
        from mpinn.train.problem import Problem
        from mpinn.options import parse_sync

        try:
            parse_sync(self.sync)
        except ValueError as exc:
            raise ValueError(f"The 'sync' parameter of {type(self).__name__}: {exc}") from None
        train_rows, val = np.arange(n_rows, dtype=np.int64), {}
        if self.solver in STOCHASTIC and self.early_stopping and not incremental:
            train_rows, val = self._split_validation(Xl, Yl, wl, shard, rs, comm)
        problem = Problem(task="classify" if self._classifier else "regress", X=Xl, y=yl, shard=shard,
                          train_rows=train_rows, n_features=n_features, classes=getattr(self, "classes_", None),
                          n_outputs=n_outputs, Y=Yl, sample_weight=wl, feature_names=self._encoded_feature_names(),
                          encoding=getattr(self, "encoding_", None), **val)
        resolved = dict(hidden=tuple(hidden), dtype=np.dtype(dtype).name,
                        batch_size=self._batch_rows(len(train_rows)) if self.solver in STOCHASTIC else "auto")
        if incremental:
            resolved["epochs"] = 1  # partial_fit: one epoch
        cfg = config_from_estimator(self, **resolved)
        tracker = self._start_tracking(comm) if self.mlflow and not incremental else None
        try:
            if self.solver == "lbfgs":
                params = self._fit_lbfgs(cfg, problem, comm, model, params, rs, checkpointer)
                if tracker:
                    tracker.log_epoch({"epoch": self.n_iter_, "loss": self.loss_})
            else:
                params = self._fit_stochastic(cfg, problem, comm, model, params, rs, checkpointer, incremental,
                                              tracker)
        except BaseException as exc:
            if tracker:
                from mpinn.parallel.faults import Preempted

                tracker.end("KILLED" if isinstance(exc, (Preempted, KeyboardInterrupt)) else "FAILED")
            raise
        if tracker:
            if checkpointer and checkpointer.last_path:
                tracker.log_checkpoint(checkpointer.last_path)
            tracker.end()
        if not np.isfinite(params).all():
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.")
        self._set_coefs(model, params)
        return self

    def _start_tracking(self, comm):
        """fit's one MLflow run (``mlflow``: True, or the run name), rank 0's; collective, so MLflow
        missing or a run that cannot start is the same InputError on every rank. partial_fit
        does not track: each call is one epoch."""
        from mpinn.train.tracking import MlflowTracker, check_available

        option = f"mlflow={self.mlflow!r}"
        check_available(comm, option)
        tracker = MlflowTracker(comm, None if self.mlflow is True else self.mlflow, option=option)
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in ("comm", "mlflow")}
        tracker.start(params, tags={"mpinn.estimator": type(self).__name__})
        return tracker

    def _batch_rows(self, n_train):
        """sklearn's batch size rule: 'auto' is min(200, n), out-of-range sizes clipped with a
        warning ('full' is mpinn's whole-batch option)."""
        from mpinn.data.hdf5 import resolve_batch_size

        if self.batch_size not in ("auto", "full") and not 1 <= self.batch_size <= n_train:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                          stacklevel=4)
        return resolve_batch_size(self.batch_size, n_train)

    def _initialize(self, layer_units, dtype, rs):
        """First fit: attributes and Glorot weights drawn from ``rs`` in sklearn's order."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output()
        model = MLP(layer_units, self.activation, self.out_activation_, dtype=dtype)
        params = model.init_params(rs)
        self._set_coefs(model, params)
        self._best_params = params.copy()
        for name in ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_",
                     "validation_loss_curve_", "_optimizer", "loss_"):
            self.__dict__.pop(name, None)
        if self.solver in STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.validation_loss_curve_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.validation_loss_curve_ = None
                self.best_validation_score_ = None

    def _flat(self, model):
        params = model.new_buffer()
        for (W, b), c, i in zip(model.views(params), self.coefs_, self.intercepts_):
            W[...] = c
            b[...] = i
        return params

    def _set_coefs(self, model, params):
        views = model.views(params)
        self.coefs_ = [W.copy() for W, _ in views]
        self.intercepts_ = [b.copy() for _, b in views]

    def _checkpointer(self, comm):
        if getattr(self, "_keep_run_state", False):  # search/warm.py: the end state, in memory
            return _RunStateKeeper(self)
        if not self.checkpoint:
            return None
        from mpinn.train.checkpoint import Checkpointer
        from mpinn.parallel.agree import on_root

        ck = Checkpointer(os.fspath(self.checkpoint), comm, keep=self.keep_checkpoints)
        on_root(comm, ck.check_writable)
        return ck

    def _fit_lbfgs(self, cfg, problem, comm, model, params, rs, checkpointer):
        from mpinn.train.lbfgs import fit_lbfgs
        from mpinn.train.loop import Trainer

        trainer = Trainer(cfg, problem, comm, log=lambda line: None, model=model, params=params,
                          random_state=rs, checkpointer=checkpointer,
                          extra_state=lambda: self._checkpoint_meta(trainer))
        result = fit_lbfgs(trainer, self.max_iter, self.max_fun, self.tol)
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        if result.status != 0:
            msg = result.message.decode() if isinstance(result.message, bytes) else result.message
            _warn_convergence(comm, f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                              f"(status={result.status}):\n{msg}\n\nIncrease the number of iterations to "
                              f"improve the convergence (max_iter={self.max_iter}).\nYou might also want to "
                              "scale the data as shown in:\n"
                              "    https://scikit-learn.org/stable/modules/preprocessing.html")
        if checkpointer:
            checkpointer.save(trainer)
        return trainer.params

    def _fit_stochastic(self, cfg, problem, comm, model, params, rs, checkpointer, incremental, tracker=None):
        from mpinn.parallel.balance import SLOW_ENV, parse_slow
        from mpinn.parallel.comm import launched_rank
        from mpinn.parallel.faults import FAULT_ENV, parse_faults
        from mpinn.train.loop import LoopState, Trainer, TrainingDiverged

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        optimizer = getattr(self, "_optimizer", None) if incremental else None
        # The state sklearn keeps across calls (warm_start, partial_fit), handed to the loop.
        best = getattr(self, "best_loss_", None)
        loop = LoopState(t=self.t_, loss_curve=list(getattr(self, "loss_curve_", None) or []),
                         best_loss=np.inf if best is None else best,
                         no_improvement=getattr(self, "_no_improvement_count", 0))
        if self.early_stopping:
            best = getattr(self, "best_validation_score_", None)
            loop.validation_scores = list(getattr(self, "validation_scores_", None) or [])
            loop.validation_loss_curve = list(getattr(self, "validation_loss_curve_", None) or [])
            loop.best_validation_score = -np.inf if best is None else best
            loop.best_params = self._best_params.copy()
        trainer = Trainer(cfg, problem, comm, log=print if self.verbose else (lambda line: None), log_every=1,
                          checkpointer=checkpointer, model=model, params=params, random_state=rs,
                          optimizer=optimizer, loop=loop, format_line=_verbose_line,
                          extra_state=lambda: self._checkpoint_meta(trainer),
                          faults=parse_faults(os.environ.get(FAULT_ENV), launched_rank(comm.rank)), tracker=tracker,
                          slow=parse_slow(os.environ.get(SLOW_ENV), comm.size))
        if getattr(self, "_continue_from", None) is not None:
            self._restore_run(trainer, comm)
        try:
            trainer.fit()
        except TrainingDiverged:
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.") from None
        if trainer.stop_reason == "preempted":
            self._stopped_by_signal(trainer)
        loop = trainer.loop
        self.n_iter_ = loop.epoch
        self.t_ = loop.t
        self.loss_curve_ = loop.loss_curve
        self.loss_ = loop.loss_curve[-1] if loop.loss_curve else None  # None: interrupted in the first epoch
        self._no_improvement_count = loop.no_improvement
        self._optimizer = trainer.optimizer
        if self.early_stopping:
            self.validation_scores_ = loop.validation_scores
            self.validation_loss_curve_ = loop.validation_loss_curve
            self.best_validation_score_ = loop.best_validation_score
            self._best_params = loop.best_params
            self.best_loss_ = None
        else:
            self.best_loss_ = loop.best_loss
        if trainer.stop_reason == "max_epochs" and not incremental:
            _warn_convergence(comm, f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                              "the optimization hasn't converged yet.")
        comm.bcast_array(trainer.params)  # identical attributes on every rank, bit for bit
        return trainer.params

    def _restore_run(self, trainer, comm):
        """Continue the run ``_continue_from`` holds (Trainer.checkpoint_state()'s pair, set on an
        unfitted estimator by search/warm.py) instead of starting at epoch 0: the fit then ends
        where one fit with this max_iter from the start ends, bit for bit (train/state.py)."""
        from mpinn.parallel.agree import run_agreed

        run_agreed(comm, lambda: trainer.restore(*self._continue_from))
        self._restored_epoch = trainer.loop.epoch  # the epochs this fit trains start here

    def _stopped_by_signal(self, trainer):
        """A signal stopped the fit on every rank at the same step (Trainer._preempt). SIGTERM or
        SIGUSR1: raise Preempted on every rank, the estimator unchanged. SIGINT (Ctrl-C) before
        the first step: KeyboardInterrupt; during training: scikit-learn's "Training interrupted
        by user." warning, and the fit ends on the weights so far (early stopping: the best)."""
        from mpinn.parallel.faults import EXIT_INTERRUPTED, Interrupted, Preempted, Preemption

        name = type(self).__name__
        if trainer.stop_exit_code != EXIT_INTERRUPTED:
            if trainer.stop_saved:
                saved = f"; checkpoint written to {self.checkpoint}: mpinn.load() returns the model so far"
            else:
                saved = "; nothing saved" + ("" if self.checkpoint else " (set checkpoint= to keep the progress)")
            raise Preempted(f"{name}.fit {trainer.stop_message}{saved}")
        if trainer.loop.global_step == trainer._start_step or Preemption.inside_another_run():
            # Nothing trained, or a search's fit: the search acts on the signal, so a model
            # trained so far is no result (it would be scored and recorded).
            raise Interrupted(f"{name}.fit {trainer.stop_message}")
        warnings.warn("Training interrupted by user.", stacklevel=5)
        if self.early_stopping and trainer.loop.best_params is not None:
            trainer.params[...] = trainer.loop.best_params  # as scikit-learn after an interrupt

    def _split_validation(self, Xl, Yl, wl, shard, rs, comm):
        """Hold out validation rows exactly as sklearn's early stopping (same rows, same order):
        (training rows, the Problem's validation fields). The CLI's --early-stopping holds out
        with the same function (early_stopping.hold_out)."""
        from mpinn.train.early_stopping import hold_out

        binary = Yl[:, 0] if self._classifier and self.n_outputs_ == 1 else None
        train, local = hold_out(np.arange(shard.n_rows, dtype=np.int64), self.validation_fraction, rs, shard, comm,
                                binary_labels=binary)
        return train, {"val_X": Xl[local], "val_Y": Yl[local], "val_weight": None if wl is None else wl[local]}

    # ---- checkpoints ----------------------------------------------------------------------

    def _checkpoint_meta(self, trainer):
        """JSON stored in checkpoints so mpinn.load returns this estimator."""
        params = {}
        for k, v in self.get_params(deep=False).items():
            if k in ("comm", "mlflow") or (k == "random_state" and not isinstance(v, (int, type(None)))):
                continue
            if k == "hidden_layer_sizes":
                v = list(v) if hasattr(v, "__iter__") else [v]
            if isinstance(v, (np.integer, np.floating, np.bool_)):
                v = v.item()
            if k == "dtype" and v is not None:
                v = np.dtype(v).name
            if k == "checkpoint" and v is not None:
                v = os.fspath(v)
            if k == "shard":
                v = str(v)
            if k == "class_weight" and isinstance(v, dict):  # JSON keys would become strings
                v = {"pairs": [[c.item() if isinstance(c, np.generic) else c, float(w)] for c, w in v.items()]}
            params[k] = v
        meta = {"class": type(self).__name__, "params": params, "n_features_in": self.n_features_in_,
                "out_activation": self.out_activation_, "solver": self.solver}
        if self._classifier:
            try:
                meta["coding"] = self._coding.to_json()
            except TypeError:
                meta["coding"] = None
        if self.solver == "lbfgs":
            meta.update(n_iter=self.n_iter_, loss=self.loss_)
        else:
            loop = trainer.loop
            meta.update(n_iter=loop.epoch, validation_scores=loop.validation_scores if self.early_stopping else None,
                        validation_loss_curve=loop.validation_loss_curve if self.early_stopping else None,
                        best_validation_score=loop.best_validation_score if self.early_stopping else None)
        return meta


class _RunStateKeeper:
    """A checkpointer that keeps the run's state (Trainer.checkpoint_state(), valid on rank 0) on
    the estimator as ``_run_state`` instead of writing a file, where the run would checkpoint:
    at its end, or when a signal stops it."""

    last_path = None

    def __init__(self, estimator):
        self.estimator = estimator

    def save(self, trainer):
        self.estimator._run_state = trainer.checkpoint_state()  # collective


def _warn_convergence(comm, message):
    """scikit-learn's ConvergenceWarning, raised on every rank (so filters, catch_warnings and
    pytest.warns see it alike everywhere) but shown once per job, by rank 0, whatever the
    program's filters (-W default, PYTHONWARNINGS)."""
    category = inputs.sklearn_or_own("ConvergenceWarning")
    # Point at the first frame outside mpinn: the line that called fit (or a Pipeline's).
    frame, level, package = sys._getframe(0), 1, os.path.dirname(os.path.abspath(__file__))
    while frame is not None and frame.f_code.co_filename.startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    with warnings_shown_by_rank0(comm.rank):
        warnings.warn(message, category, stacklevel=level)


def _verbose_line(record):
    """sklearn's verbose output for one epoch."""
    line = "Iteration %d, loss = %.8f" % (record["epoch"], record["loss"])
    if "validation_score" in record:
        line += "\nValidation score: %f" % record["validation_score"]
    return line
