"""scikit-learn-compatible MLPClassifier and MLPRegressor that train data-parallel under mpiexec.

Change one import and launch with ``mpiexec -n N python script.py``: every rank passes the same
arrays (or an HDF5 path, so each rank reads only its rows), keeps only its shard, and all ranks
train in lockstep through the same Trainer as the CLI (train.py). The numerics are sklearn's
formula for formula, so the same random_state gives the same model as
sklearn.neural_network at any rank count (to rounding). scikit-learn itself is optional: it is
used only by to_sklearn() and, when loaded, for the tags check_estimator reads.

Parameters, attributes and the differences from scikit-learn: docs/api.md.
"""

from __future__ import annotations

import inspect
import numbers
import os
import warnings

import numpy as np

from . import inputs
from .errors import InputError
from .model import ACTIVATE, HIDDEN_ACTIVATIONS, MLP

SOLVERS = ("lbfgs", "sgd", "adam", "gd")
STOCHASTIC = ("sgd", "adam", "gd")
SCHEDULES = ("constant", "invscaling", "adaptive")


class _SerialComm:
    """Stands in for an mpi4py communicator when mpi4py is missing: one process, no MPI."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1


class _AvailableIf:
    """A method that exists only when ``check(estimator)`` holds (as sklearn's available_if)."""

    def __init__(self, check, fn):
        self.check, self.fn = check, fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __get__(self, obj, owner=None):
        if obj is not None and not self.check(obj):
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{obj.solver} is not stochastic.")
        return self.fn if obj is None else self.fn.__get__(obj, owner)


def _stochastic_only(fn):
    return _AvailableIf(lambda est: est.solver in STOCHASTIC, fn)


def _same(a, b):
    try:
        return bool(a is b or (type(a) is type(b) and a == b))
    except (ValueError, TypeError):
        return False


class _BaseMLP:
    """Everything shared by the two estimators; not for direct use."""

    _classifier = False

    # ---- parameters (get_params/set_params without sklearn) -------------------------------

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep=True):
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        valid = self.get_params(deep=True)
        nested = {}
        for key, value in params.items():
            name, delim, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {self}. "
                                 f"Valid parameters are: {self._get_param_names()!r}.")
            if delim:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub in nested.items():
            valid[name].set_params(**sub)
        return self

    def __repr__(self):
        sig = inspect.signature(type(self).__init__).parameters
        changed = [f"{n}={getattr(self, n)!r}" for n, p in sig.items()
                   if n != "self" and not _same(getattr(self, n), p.default)]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coefs_")

    def __sklearn_tags__(self):
        """The tags sklearn's estimator checks read (sklearn is imported only when asked)."""
        from sklearn.utils import ClassifierTags, InputTags, RegressorTags, Tags, TargetTags

        return Tags(estimator_type="classifier" if self._classifier else "regressor",
                    target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(multi_label=True) if self._classifier else None,
                    regressor_tags=None if self._classifier else RegressorTags(),
                    input_tags=InputTags(sparse=True))

    def _validate_params(self):
        """Check every parameter (sklearn's rules and wording); the hidden layer sizes as a list."""
        return inputs.validate_params(self, solvers=SOLVERS, schedules=SCHEDULES, activations=HIDDEN_ACTIVATIONS)

    # ---- the communicator and the data --------------------------------------------------

    def _get_comm(self):
        from .comm import Comm, world

        if self.comm is None:
            try:
                return world()
            except ImportError:
                return Comm(_SerialComm())
        return self.comm if isinstance(self.comm, Comm) else Comm(self.comm)

    def _read(self, X, y, sample_weight, comm):
        """This rank's rows: (X, y, weights, shard, n_rows, y_all or None).

        Arrays: every rank passes the same global arrays, checks them and keeps its shard.
        An HDF5 path (or open h5py.File): each rank reads only its rows (y names the target dataset, default
        "y"; sample_weight may name a weight dataset in the file).
        """
        from .partition import make_shard
        from .problem import collective_check, load_shard

        if hasattr(X, "filename") and hasattr(X, "keys"):  # an open h5py.File: read by name
            X = X.filename
        if isinstance(X, (str, os.PathLike)):
            if y is not None and not isinstance(y, str):
                raise ValueError("with an HDF5 path as X, y must be None or the name of the target dataset")
            if sample_weight is not None and not isinstance(sample_weight, str):
                raise ValueError("with an HDF5 path as X, sample_weight must be None or a dataset name")
            Xl, yl, wl, shard = load_shard(os.fspath(X), comm, y_name=y or "y", w_name=sample_weight,
                                           shard=self.shard, dtype=self.dtype,
                                           task="classify" if self._classifier else "regress")
            if yl.ndim == 2 and yl.shape[1] == 1:
                yl = yl.ravel()
            if wl is not None:
                collective_check(comm, inputs.finite_problem(wl, "sample_weight"))
            return Xl, yl, wl, shard, shard.n_rows, None
        Xa = inputs.check_X(X)
        ya = inputs.check_y(y, len(Xa), classifier=self._classifier)
        dtype = inputs.train_dtype(Xa, self.dtype)
        sw = inputs.check_sample_weight(sample_weight, len(Xa), dtype)
        if comm.size > 1:  # SPMD: every rank must pass the same global arrays
            root = comm.bcast_json([len(Xa), Xa.shape[1]])
            collective_check(comm, None if root == [len(Xa), Xa.shape[1]] else
                             f"rank {comm.rank} passed X of shape {Xa.shape}, rank 0 {tuple(root)}: every rank "
                             "must pass the same global arrays (or an HDF5 path)")
        shard = make_shard(len(Xa), comm.rank, comm.size, self.shard)
        Xl = np.ascontiguousarray(Xa[shard.as_slice()], dtype=dtype)
        collective_check(comm, inputs.finite_problem(Xl, "X"))
        wl = None if sw is None else sw[shard.as_slice()]
        return Xl, ya[shard.as_slice()], wl, shard, len(Xa), ya

    # ---- fit ------------------------------------------------------------------------------

    def fit(self, X, y=None, sample_weight=None):
        """Train on X, y (the same global arrays on every rank, or an HDF5 path); returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental):
        hidden = self._validate_params()
        comm = self._get_comm()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        Xl, yl, wl, shard, n_rows, y_all = self._read(X, y, sample_weight, comm)
        if n_rows < 1:
            raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
        n_features = Xl.shape[1]
        if first_pass:
            self.n_features_in_ = n_features
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
            _sync_random_state(rs, comm)  # every rank draws what rank 0 would
        if first_pass:
            self._initialize(layer_units, dtype, rs)
        model = MLP(layer_units, self.activation, self.out_activation_, dtype=dtype)
        params = self._flat(model)
        checkpointer = self._checkpointer(comm)
        from .config import TrainConfig
        from .problem import Problem

        problem = Problem(task="classify" if self._classifier else "regress", X=Xl, y=yl, shard=shard,
                          train_rows=np.arange(n_rows, dtype=np.int64), n_features=n_features,
                          classes=getattr(self, "classes_", None), n_outputs=n_outputs, Y=Yl, sample_weight=wl)
        cfg = TrainConfig(hidden=tuple(hidden), activation=self.activation, solver=self.solver,
                          lr=self.learning_rate_init, lr_schedule=self.learning_rate, power_t=self.power_t,
                          momentum=self.momentum, nesterov=self.nesterovs_momentum, beta_1=self.beta_1,
                          beta_2=self.beta_2, epsilon=self.epsilon, epochs=1 if incremental else self.max_iter,
                          alpha=self.alpha, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
                          dtype=np.dtype(dtype).name, shard=str(self.shard),
                          shuffle="global" if self.shuffle else "none",
                          checkpoint=None if self.checkpoint is None else os.fspath(self.checkpoint),
                          checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints)
        if self.solver == "lbfgs":
            params = self._fit_lbfgs(cfg, problem, comm, model, params, rs, checkpointer)
        else:
            params = self._fit_stochastic(cfg, problem, comm, model, params, rs, checkpointer, incremental)
        if not np.isfinite(params).all():
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.")
        self._set_coefs(model, params)
        return self

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
        if not self.checkpoint:
            return None
        from .checkpoint import Checkpointer
        from .problem import decide_on_root

        ck = Checkpointer(os.fspath(self.checkpoint), comm, keep=self.keep_checkpoints)
        decide_on_root(comm, ck.check_writable)
        return ck

    def _fit_lbfgs(self, cfg, problem, comm, model, params, rs, checkpointer):
        from .train import Trainer

        trainer = Trainer(cfg, problem, comm, log=lambda line: None, model=model, params=params,
                          random_state=rs, checkpointer=checkpointer)
        result = trainer.fit_lbfgs(self.max_iter, self.max_fun, self.tol)
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        if result.status != 0:
            msg = result.message.decode() if isinstance(result.message, bytes) else result.message
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) (status={result.status}):\n"
                          f"{msg}\n\nIncrease the number of iterations to improve the convergence "
                          f"(max_iter={self.max_iter}).\nYou might also want to scale the data as shown in:\n"
                          "    https://scikit-learn.org/stable/modules/preprocessing.html",
                          inputs.sklearn_or_own("ConvergenceWarning"), stacklevel=4)
        if checkpointer:
            trainer.extra_state = lambda: self._checkpoint_meta(trainer)
            checkpointer.save(trainer)
        return trainer.params

    def _fit_stochastic(self, cfg, problem, comm, model, params, rs, checkpointer, incremental):
        from .train import Trainer, TrainingDiverged

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        optimizer = getattr(self, "_optimizer", None) if incremental else None
        if self.early_stopping:
            self._split_validation(problem, rs, comm)
        n_train = len(problem.train_rows)
        if self.batch_size == "auto":
            cfg.batch_size = min(200, n_train)
        elif self.batch_size == "full":
            cfg.batch_size = n_train
        else:
            if self.batch_size > n_train:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                              stacklevel=4)
            cfg.batch_size = int(np.clip(self.batch_size, 1, n_train))
        trainer = Trainer(cfg, problem, comm, log=print if self.verbose else (lambda line: None), log_every=1,
                          checkpointer=checkpointer, model=model, params=params, random_state=rs,
                          optimizer=optimizer)
        # The state sklearn keeps across calls (warm_start, partial_fit).
        trainer.t = self.t_
        trainer.loss_curve = list(getattr(self, "loss_curve_", None) or [])
        best = getattr(self, "best_loss_", None)
        trainer.best_loss = np.inf if best is None else best
        trainer.no_improvement = getattr(self, "_no_improvement_count", 0)
        if self.early_stopping:
            trainer.validation_scores = list(getattr(self, "validation_scores_", None) or [])
            trainer.validation_loss_curve = list(getattr(self, "validation_loss_curve_", None) or [])
            best = getattr(self, "best_validation_score_", None)
            trainer.best_validation_score = -np.inf if best is None else best
            trainer.best_params = self._best_params.copy()
        trainer.format_line = _verbose_line
        if checkpointer:
            trainer.extra_state = lambda: self._checkpoint_meta(trainer)
        try:
            trainer.fit()
        except TrainingDiverged:
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.") from None
        self.n_iter_ = trainer.epoch
        self.t_ = trainer.t
        self.loss_curve_ = trainer.loss_curve
        self.loss_ = trainer.loss_curve[-1]
        self._no_improvement_count = trainer.no_improvement
        self._optimizer = trainer.optimizer
        if self.early_stopping:
            self.validation_scores_ = trainer.validation_scores
            self.validation_loss_curve_ = trainer.validation_loss_curve
            self.best_validation_score_ = trainer.best_validation_score
            self._best_params = trainer.best_params
            self.best_loss_ = None
        else:
            self.best_loss_ = trainer.best_loss
        if trainer.stop_reason == "max_epochs" and not incremental:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", inputs.sklearn_or_own("ConvergenceWarning"),
                          stacklevel=4)
        comm.bcast_array(trainer.params)  # identical attributes on every rank, bit for bit
        return trainer.params

    def _split_validation(self, problem, rs, comm):
        """Hold out validation rows exactly as sklearn's early stopping (same rows, same order)."""
        n = problem.shard.n_rows
        stratify = None
        if self._classifier and self.n_outputs_ == 1:
            stratify = _global_column(problem.Y[:, 0], problem.shard, comm)
        train, val = inputs.train_validation_split(n, self.validation_fraction, rs, stratify)
        if len(val) < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                             "your dataset.")
        local = problem.shard.local_positions(val)[1]
        problem.train_rows = np.asarray(train, dtype=np.int64)
        problem.val_X, problem.val_Y = problem.X[local], problem.Y[local]
        problem.val_weight = None if problem.sample_weight is None else problem.sample_weight[local]

    # ---- prediction -----------------------------------------------------------------------

    def _check_fitted(self):
        if not hasattr(self, "coefs_"):
            raise inputs.sklearn_or_own("NotFittedError")(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator.")

    def _forward(self, X):
        """Output activations for X on this rank alone (no communication)."""
        self._check_fitted()
        X = inputs.check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        problem = inputs.finite_problem(X, "X")
        if problem:
            raise ValueError(problem)
        a = np.asarray(X, dtype=self.coefs_[0].dtype)
        last = len(self.coefs_) - 1
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            a = a @ W
            a += b
            ACTIVATE[self.out_activation_ if i == last else self.activation](a, np.empty((len(a), 1), a.dtype))
        return a

    # ---- export -----------------------------------------------------------------------------

    def to_sklearn(self):
        """A fitted sklearn.neural_network estimator with these weights (needs scikit-learn)."""
        try:
            from sklearn import neural_network
        except ImportError:
            raise ImportError("to_sklearn() needs scikit-learn: pip install 'mpinn[sklearn]'") from None
        self._check_fitted()
        cls = getattr(neural_network, type(self).__name__)
        names = cls().get_params()
        params = {k: getattr(self, k) for k in names}
        if params["solver"] == "gd":
            params.update(solver="sgd", momentum=0.0)
        if params["batch_size"] == "full":
            params["batch_size"] = "auto"
        est = cls(**params)
        for name in ("n_features_in_", "n_layers_", "n_outputs_", "out_activation_", "n_iter_", "t_", "loss_",
                     "best_loss_", "validation_scores_", "best_validation_score_"):
            if hasattr(self, name):
                setattr(est, name, getattr(self, name))
        if hasattr(self, "loss_curve_"):
            est.loss_curve_ = list(self.loss_curve_)
        est.coefs_ = [c.copy() for c in self.coefs_]
        est.intercepts_ = [b.copy() for b in self.intercepts_]
        if self._classifier:
            from sklearn.preprocessing import LabelBinarizer

            est.classes_ = self.classes_.copy()
            lb = LabelBinarizer()
            if self._coding.y_type == "multilabel-indicator":
                lb.fit(np.eye(len(self.classes_), dtype=int))
            else:
                lb.fit(self.classes_)
            est._label_binarizer = lb
        return est

    def _checkpoint_meta(self, trainer):
        """JSON stored in checkpoints so mpinn.load returns this estimator."""
        params = {}
        for k, v in self.get_params(deep=False).items():
            if k == "comm" or (k == "random_state" and not isinstance(v, (int, type(None)))):
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
            meta.update(n_iter=trainer.epoch, validation_scores=trainer.validation_scores if self.early_stopping else None,
                        validation_loss_curve=trainer.validation_loss_curve if self.early_stopping else None,
                        best_validation_score=trainer.best_validation_score if self.early_stopping else None)
        return meta


def _verbose_line(record):
    """sklearn's verbose output for one epoch."""
    line = "Iteration %d, loss = %.8f" % (record["epoch"], record["loss"])
    if "validation_score" in record:
        line += "\nValidation score: %f" % record["validation_score"]
    return line


def _sync_random_state(rs, comm):
    """Give every rank rank 0's RandomState state (random_state None or an instance)."""
    kind, key, pos, has_gauss, gauss = rs.get_state()
    key = np.array(key, dtype=np.uint32)
    comm.bcast_array(key)
    pos, has_gauss, gauss = comm.bcast_json([int(pos), int(has_gauss), float(gauss)])
    rs.set_state((kind, key, pos, has_gauss, gauss))


def _global_column(local, shard, comm):
    """The full column of a per-row value (e.g. 0/1 labels) from each rank's rows."""
    full = np.zeros(shard.n_rows, dtype=np.float64)
    full[shard.rows] = local
    return comm.allreduce(full, "sum")


class MLPClassifier(_BaseMLP):
    """Multi-layer perceptron classifier; sklearn's MLPClassifier, data-parallel under mpiexec.

    Parameters as sklearn 1.9's MLPClassifier plus solver='gd', batch_size='full',
    class_weight, dtype, shard, comm, checkpoint, checkpoint_every, keep_checkpoints.
    See docs/api.md.
    """

    _classifier = True
    _estimator_type = "classifier"  # what scikit-learn < 1.6 reads instead of the tags

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, dtype=None, shard="block", comm=None, checkpoint=None,
                 checkpoint_every=0, keep_checkpoints=3):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.class_weight = class_weight
        self.dtype = dtype
        self.shard = shard
        self.comm = comm
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints

    def _output(self):
        return self._coding.output

    def _targets(self, yl, y_all, wl, comm, incremental, dtype):
        """Labels -> output space (LabelBinarizer's), class_weight folded into the weights."""
        if y_all is None:  # HDF5: the classes from every rank's rows
            if yl.ndim == 2:
                from .problem import collective_check

                collective_check(comm, None if np.isin(yl, (0, 1)).all() else
                                 "Unknown label type: multiclass-multioutput (2-D labels must be 0/1 indicators)")
                coding = inputs.LabelCoding(np.arange(yl.shape[1]), "multilabel-indicator")
            else:
                from .problem import find_classes

                try:
                    classes = find_classes(comm, [yl])
                except InputError as exc:
                    raise ValueError(str(exc)) from None
                coding = inputs.LabelCoding(classes, "multiclass" if len(classes) > 2 else "binary")
            labels = coding.classes
        else:
            coding = inputs.LabelCoding.fit(y_all)
            labels = coding.classes
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._coding = coding
            self.classes_ = coding.classes
        elif self.warm_start:
            if set(labels.tolist()) != set(self.classes_.tolist()):
                raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                 f"call to fit. Previously got {self.classes_}, `y` has {labels}")
        elif len(np.setdiff1d(labels, self.classes_)):
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                             f"'y' has {labels}.")
        Yl = self._coding.transform(yl, dtype)
        if self.class_weight is not None:
            wl = self._apply_class_weight(yl, Yl, wl, comm, dtype)
        return Yl, wl

    def _apply_class_weight(self, yl, Yl, wl, comm, dtype):
        if self._coding.y_type == "multilabel-indicator":
            raise ValueError("class_weight is not supported for multilabel targets")
        classes = self.classes_
        idx = np.searchsorted(classes, yl)
        if isinstance(self.class_weight, str):
            if self.class_weight != "balanced":
                raise ValueError(f"class_weight must be 'balanced', a dict or None, got {self.class_weight!r}")
            counts = comm.allreduce(np.bincount(idx, minlength=len(classes)).astype(np.float64), "sum")
            per_class = np.zeros(len(classes))
            present = counts > 0
            per_class[present] = inputs.balanced_class_weight(counts[present])
        elif isinstance(self.class_weight, dict):
            unknown = set(self.class_weight) - set(classes.tolist())
            if unknown:
                raise ValueError(f"class_weight has labels {sorted(unknown, key=str)} that are not in classes_ "
                                 f"{classes.tolist()}")
            per_class = np.array([float(self.class_weight.get(c, 1.0)) for c in classes.tolist()])
        else:
            raise ValueError(f"class_weight must be 'balanced', a dict or None, got {self.class_weight!r}")
        w = per_class[idx].astype(dtype)
        return w if wl is None else w * wl

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X, y, keeping the optimizer state; ``classes`` on the first call."""
        if getattr(self, "classes_", None) is None:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            y_arr = np.asarray(y) if not isinstance(X, (str, os.PathLike)) else None
            if y_arr is not None and inputs.type_of_target(y_arr) == "multilabel-indicator":
                self._coding = inputs.LabelCoding.fit(y_arr)
            else:
                cls = inputs.unique_labels(np.asarray(classes))
                self._coding = inputs.LabelCoding(cls, "multiclass" if len(cls) > 2 else "binary")
            self.classes_ = self._coding.classes
        elif classes is not None and not np.array_equal(self.classes_, inputs.unique_labels(np.asarray(classes))):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                             f"was: {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    partial_fit = _stochastic_only(partial_fit)

    def predict(self, X):
        """Class labels (this rank, X as given; no communication)."""
        out = self._forward(X)
        return self._coding.inverse(out)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of classes_."""
        out = self._forward(X)
        if self.n_outputs_ == 1:
            p = out.ravel()
            return np.vstack([1 - p, p]).T
        return out

    def predict_log_proba(self, X):
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy (subset accuracy for multilabel targets)."""
        pred = self.predict(X)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1 and pred.ndim == 1:
            y = y.ravel()
        ok = np.all(pred == y, axis=1) if pred.ndim == 2 else pred == y
        return float(np.average(ok, weights=sample_weight))


class MLPRegressor(_BaseMLP):
    """Multi-layer perceptron regressor; sklearn's MLPRegressor, data-parallel under mpiexec.

    loss 'squared_error' or 'poisson' (exp output). Multi-output squared error: the gradient is
    the true gradient of the loss (averaged over outputs); sklearn's is n_outputs times larger
    (scikit-learn issue #8349). See docs/api.md.
    """

    _estimator_type = "regressor"

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001,
                 power_t=0.5, max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 max_fun=15000, dtype=None, shard="block", comm=None, checkpoint=None, checkpoint_every=0,
                 keep_checkpoints=3):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.shard = shard
        self.comm = comm
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints

    def _validate_params(self):
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"The 'loss' parameter of MLPRegressor must be a str among "
                             f"{{'squared_error', 'poisson'}}. Got {self.loss!r} instead.")
        return super()._validate_params()

    def _output(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _targets(self, yl, y_all, wl, comm, incremental, dtype):
        Y = np.asarray(yl, dtype=dtype)
        return Y.reshape(len(Y), 1 if Y.ndim == 1 else Y.shape[1]), wl  # a rank may hold no rows

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X, y, keeping the optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    partial_fit = _stochastic_only(partial_fit)

    def predict(self, X):
        """Predicted values (this rank, X as given; no communication)."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def score(self, X, y, sample_weight=None):
        """R2 (uniform average over outputs), as sklearn's r2_score."""
        from . import scoring

        pred = self.predict(X)
        Y = np.asarray(y, dtype=np.float64).reshape(len(pred), -1)
        P = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
        if len(Y) < 2:
            warnings.warn("R^2 score is not well-defined with less than two samples.", stacklevel=2)
            return float("nan")
        first = scoring.r2_first_partial(Y, sample_weight)
        second = scoring.r2_second_partial(Y, P, first[1:] / first[0], sample_weight)
        second[-1] = 0  # as RegressorMixin.score: no NaN short-cut
        return scoring.r2(second)
