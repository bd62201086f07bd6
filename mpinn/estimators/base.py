"""The scikit-learn-compatible base of MLPClassifier and MLPRegressor (classes.py).

Parameter plumbing without sklearn (get_params, set_params, repr, tags), the fitted check,
prediction on this rank alone (a RowView of a search's fold: by the ranks of ``comm`` together,
through parallel/comm.py) and to_sklearn. Fitting is fit.py.
"""

from __future__ import annotations

import inspect

import numpy as np

from mpinn.data import columns, inputs
from mpinn.data.rows import is_row_view
from mpinn.nn import optim
from mpinn.estimators.params import validate_params
from mpinn.nn.activations import HIDDEN_ACTIVATIONS
from mpinn.nn.model import forward_layers

# optim's solvers are all minibatch ones (partial_fit works with them); lbfgs is the
# estimators' full-batch solver (train/lbfgs.py). The error messages print these as a set.
STOCHASTIC = optim.SOLVERS
SOLVERS = ("lbfgs",) + STOCHASTIC
SCHEDULES = optim.SCHEDULES


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


def stochastic_only(fn):
    return _AvailableIf(lambda est: est.solver in STOCHASTIC, fn)


def _same(a, b):
    try:
        return bool(a is b or (type(a) is type(b) and a == b))
    except (ValueError, TypeError):
        return False


class _BaseMLP:
    """The sklearn-compatible part shared by the two estimators; not for direct use."""

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
        return validate_params(self, solvers=SOLVERS, schedules=SCHEDULES, activations=HIDDEN_ACTIVATIONS)

    # ---- prediction -----------------------------------------------------------------------

    def _check_fitted(self):
        if not hasattr(self, "coefs_"):
            raise inputs.sklearn_or_own("NotFittedError")(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator.")

    def _by_name(self, X):
        """A DataFrame's columns in the order (and categorical encoding) the model was trained
        with, when the model knows its feature names; anything else as given."""
        names = getattr(self, "feature_names_in_", None)
        if names is None or not columns.is_table(X):
            return X
        encoding = getattr(self, "encoding_", None) or {}
        return columns.encode_table(X, [str(n) for n in names], encoding.get("categories", {}),
                                    encoding.get("unknown_category", "error"))

    def _encoded_feature_names(self):
        """The model's input features by name (categorical columns as ``column=category``), or None."""
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            return None
        encoding = getattr(self, "encoding_", None) or {}
        return columns.encoded_names([str(n) for n in names], encoding.get("categories", {}))

    def _forward(self, X):
        """Output activations for X on this rank alone (no communication); for a RowView, by all
        ranks of ``comm`` together."""
        self._check_fitted()
        if is_row_view(X):
            return self._forward_view(X)
        X = inputs.check_X(self._by_name(X))
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        problem = inputs.finite_problem(X, "X")
        if problem:
            raise ValueError(problem)
        scaler = getattr(self, "scaler_", None)  # a `mpinn train --scale` model (loading.py)
        X = np.asarray(X, dtype=self.coefs_[0].dtype) if scaler is None else \
            scaler.transform_inplace(np.array(X, dtype=self.coefs_[0].dtype))
        return forward_layers(list(zip(self.coefs_, self.intercepts_)), X, self.activation, self.out_activation_)

    def _forward_view(self, X):
        """Collective: each rank reads and forwards its block of the view's rows (a search's test
        fold, data/rows.py), and every rank gets all the outputs in row order."""
        from mpinn.data.partition import block_offsets
        from mpinn.parallel.comm import as_comm

        comm = as_comm(self.comm)
        offsets = block_offsets(len(X), comm.size)
        lo, hi = int(offsets[comm.rank]), int(offsets[comm.rank + 1])
        out, problem = None, None
        try:
            out = self._forward(X.read(np.arange(lo, hi))) if hi > lo else \
                np.empty((0, self.intercepts_[-1].shape[0]), dtype=self.coefs_[0].dtype)
        except (ValueError, OSError) as exc:  # bad rows, an unreadable file: never a rank left waiting
            problem = str(exc)
        problem = comm.any_error(problem)
        if problem is not None:  # every rank raises what the lowest failing rank found
            raise ValueError(problem)
        return comm.allgather_rows(np.ascontiguousarray(out), np.diff(offsets))

    # ---- export -----------------------------------------------------------------------------

    def to_sklearn(self, by_name=None):
        """A fitted sklearn.neural_network estimator with these weights (needs scikit-learn); for
        a model trained with feature scaling (``scaler_``), a Pipeline of scikit-learn's scaler
        with the same statistics and that estimator.

        ``by_name``: put a ColumnTransformer first that takes a DataFrame's columns by name
        (``feature_names_in_``), in any order, one-hot encoding categorical ones; the result then
        takes DataFrames only. None (default): only for a model with categorical columns, whose
        raw input is a table anyway; arrays keep working with any other model."""
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
        steps = []
        if by_name is None:
            by_name = bool((getattr(self, "encoding_", None) or {}).get("categories"))
        if by_name and getattr(self, "feature_names_in_", None) is None:
            raise ValueError("to_sklearn(by_name=True) needs a model that knows its feature names (feature_names_in_)")
        if by_name:  # a DataFrame's columns by name
            steps.append(self._sklearn_columns())
        if getattr(self, "scaler_", None) is not None:
            steps.append(self.scaler_.to_sklearn())
        if steps:
            from sklearn.pipeline import make_pipeline

            return make_pipeline(*steps, est)
        return est

    def _sklearn_columns(self):
        """scikit-learn's ColumnTransformer that takes a DataFrame's columns by name, in the
        model's order, one-hot encoding the categorical ones with the model's categories
        (OneHotEncoder's handle_unknown: 'error', or 'ignore' for all-zero indicators)."""
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.preprocessing import OneHotEncoder

        names = [str(n) for n in self.feature_names_in_]
        encoding = getattr(self, "encoding_", None) or {}
        cats = encoding.get("categories", {})
        unknown = "ignore" if encoding.get("unknown_category") == "zeros" else "error"
        parts = [(f"c{j}", OneHotEncoder(categories=[list(cats[n])], handle_unknown=unknown, dtype=np.float64)
                  if n in cats else "passthrough", [n]) for j, n in enumerate(names)]
        transformer = ColumnTransformer(parts, sparse_threshold=0)
        # Fitted on a frame of the model's categories: the encoders learn nothing else.
        rows = max([1] + [len(v) for v in cats.values()])
        frame = pd.DataFrame({n: [cats[n][i % len(cats[n])] for i in range(rows)] if n in cats else [0.0] * rows
                              for n in names})
        return transformer.fit(frame)
