"""Checkpoints back to estimators: what mpinn.load returns. No MPI.

A checkpoint written by an estimator carries an ``estimator`` entry in its state (the class,
its configuration describes. Either way the result has sklearn's fitted attributes, predicts,
and can continue with partial_fit (the optimizer state is restored).

A `mpinn train` run's classes are its original labels: the class names of its data file when
the labels were their codes (so classes_ and predict give 'setosa', not 0). scikit-learn keeps
classes_ sorted; names whose codes are in another order have the output units reordered to
match (and the optimizer state with them). A run with --scale carries its fitted scaler as
``scaler_``: predict, predict_proba and score apply it to raw features, partial_fit and
warm-start fits train on scaled features, and to_sklearn() returns a Pipeline. A run on a
data file that names its columns has ``feature_names_in_`` (the table's columns) and, with
categorical columns, ``encoding_``: predict on a DataFrame takes its columns by name and
one-hot encodes them as `mpinn data convert` did.
"""

from __future__ import annotations

import numpy as np

from mpinn.data import inputs
from mpinn.train.config import config_from_estimator, estimator_params_from_config, optimizer_from_config
from mpinn.estimators.classes import MLPClassifier, MLPRegressor
from mpinn.nn.fitted import class_labels
from mpinn.nn.model import MLP
from mpinn.preprocessing.training import scaler_from_arrays

# Optimizer arrays that change sign with the output units they belong to (first moments);
# the others (adam's second moment v) only move with them.
_SIGNED = ("velocity", "m")


def from_checkpoint(attrs, arrays):
    """The estimator stored in a checkpoint (written by an estimator or by `mpinn train`)."""
    meta_model = attrs["model"]
    state = attrs["state"]
    meta = state.get("estimator")
    cfg = attrs["config"]
    if meta is not None:
        cls = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}[meta["class"]]
        params = dict(meta["params"])
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        if isinstance(params.get("class_weight"), dict):
            params["class_weight"] = {c: w for c, w in params["class_weight"]["pairs"]}
        est = cls(**params)
    else:  # a CLI run: its config in sklearn's terms
        cls = MLPClassifier if meta_model["task"] == "classify" else MLPRegressor
        est = cls(**estimator_params_from_config(cfg))
    model = MLP(meta_model["layer_sizes"], meta_model["activation"], meta_model["output"], dtype=meta_model["dtype"])
    params = np.asarray(arrays["params"], dtype=model.dtype)
    opt_arrays = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("optimizer/")}
    labels = None
    if meta_model["task"] == "classify" and not (meta or {}).get("coding"):
        labels, params, opt_arrays = _sorted_labels(class_labels(attrs["classes"], attrs["class_names"]),
                                                    model, params, opt_arrays)
    est._set_coefs(model, params)
    est.n_features_in_ = model.layer_sizes[0]
    est.n_layers_ = len(model.layer_sizes)
    est.n_outputs_ = model.layer_sizes[-1]
    est.out_activation_ = meta_model["output"]
    if est._classifier:
        coding = (meta or {}).get("coding")
        if coding:
            est._coding = inputs.LabelCoding(np.asarray(coding["classes"]), coding["y_type"])
        else:
            est._coding = inputs.LabelCoding(labels, "multiclass" if meta_model["output"] == "softmax" else "binary")
        est.classes_ = est._coding.classes
    scaler = scaler_from_arrays(arrays)
    if scaler is not None:
        est.scaler_ = scaler
    names, encoding = attrs.get("feature_names"), attrs.get("encoding")
    if names:  # the data file's columns: a DataFrame's are taken by name (base._by_name)
        est.feature_names_in_ = np.asarray(encoding["input_columns"] if encoding else names, dtype=object)
        est.encoding_ = encoding
    if est.solver == "lbfgs":
        est.n_iter_, est.loss_, est.t_ = meta["n_iter"], meta["loss"], 0
        return est
    est.n_iter_ = meta["n_iter"] if meta else state["epoch"]
    est.t_ = state["t"]
    est.loss_curve_ = np.asarray(arrays["loss_curve"]).tolist()
    est.loss_ = est.loss_curve_[-1] if est.loss_curve_ else None
    est._no_improvement_count = state["no_improvement"]
    est._best_params = params.copy()
    if meta and meta.get("validation_scores") is not None:
        est.validation_scores_ = meta["validation_scores"]
        est.validation_loss_curve_ = meta["validation_loss_curve"]
        est.best_validation_score_ = meta["best_validation_score"]
        est.best_loss_ = None
    elif state.get("validation") is not None:  # `mpinn train --early-stopping`
        est.validation_scores_ = state["validation"]["scores"]
        est.validation_loss_curve_ = state["validation"]["loss_curve"]
        est.best_validation_score_ = state["validation"]["best"]
        est.best_loss_ = None
    else:
        est.validation_scores_ = est.best_validation_score_ = est.validation_loss_curve_ = None
        est.best_loss_ = np.inf if state["best_loss"] is None else state["best_loss"]
    optimizer = optimizer_from_config(config_from_estimator(est), model.n_params, model.dtype)
    optimizer.load_state(state["optimizer"], opt_arrays)
    est._optimizer = optimizer
    est.history_ = state.get("history", [])
    return est


def _sorted_labels(labels, model, params, opt_arrays):
    """(labels sorted, params, optimizer arrays) with the output units in the labels' sorted order:
    softmax columns permuted; a single logistic unit whose two labels swap places is negated
    (sigmoid(-z) = 1 - sigmoid(z)), and the optimizer state moves with the parameters."""
    order = np.argsort(labels, kind="stable")
    if (order == np.arange(len(labels))).all():
        return labels, params, opt_arrays
    index = np.arange(model.n_params)
    W, b = model._make_views(index)[-1]
    perm, sign = index.copy(), np.ones(model.n_params)
    if model.output == "softmax":
        perm[W] = W[:, order]
        perm[b] = b[order]
    else:
        sign[W], sign[b] = -1.0, -1.0
    params = (params[perm] * sign).astype(params.dtype)
    opt_arrays = {k: (v[perm] * (sign if k in _SIGNED else 1.0)).astype(v.dtype)
                  if np.shape(v) == (model.n_params,) else v for k, v in opt_arrays.items()}
    return labels[order], params, opt_arrays


def load(path):
    """mpinn.load: the estimator stored in a checkpoint file or directory."""
    from mpinn.train.checkpoint import read_checkpoint

    return from_checkpoint(*read_checkpoint(path))
