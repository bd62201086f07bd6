"""The estimators' constructor parameters checked up front, as scikit-learn's validation does:
one message naming the parameter and its bad value. No MPI here."""

from __future__ import annotations

import numbers

import numpy as np

from mpinn.errors import InputError
from mpinn.options import parse_shard

def validate_params(est, *, solvers, schedules, activations):
    """sklearn's parameter checks for the estimators, with its wording; returns the hidden sizes."""
    name = type(est).__name__

    def bad(param, what):
        raise ValueError(f"The {param!r} parameter of {name} must be {what}. Got {getattr(est, param)!r} instead.")

    def real(param, low, high=np.inf, low_open=False, high_open=True):
        v = getattr(est, param)
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or np.isnan(v) or \
                not (low < v if low_open else low <= v) or not (v < high if high_open else v <= high):
            bad(param, f"a float in the range {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")

    def integer(param, low):
        v = getattr(est, param)
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
            bad(param, f"an int in the range [{low}, inf)")

    def choice(param, options):
        if not isinstance(getattr(est, param), str) or getattr(est, param) not in options:
            bad(param, "a str among " + str(set(options)))

    choice("activation", activations)
    choice("solver", solvers)
    choice("learning_rate", schedules)
    real("alpha", 0)
    real("learning_rate_init", 0, low_open=True)
    real("power_t", 0)
    real("tol", 0)
    real("momentum", 0, 1, high_open=False)
    real("validation_fraction", 0, 1)
    real("beta_1", 0, 1)
    real("beta_2", 0, 1)
    real("epsilon", 0, low_open=True)
    integer("max_iter", 1)
    integer("max_fun", 1)
    integer("checkpoint_every", 0)
    integer("keep_checkpoints", 1)
    if not (est.n_iter_no_change == np.inf or (isinstance(est.n_iter_no_change, numbers.Integral)
                                               and est.n_iter_no_change >= 1)):
        bad("n_iter_no_change", "an int in the range [1, inf) or inf")
    if est.batch_size not in ("auto", "full"):
        integer("batch_size", 1)
    for flag in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
        if not isinstance(getattr(est, flag), (bool, np.bool_)):
            bad(flag, "an instance of 'bool'")
    sizes = est.hidden_layer_sizes
    sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
    if any(not isinstance(s, numbers.Integral) or s <= 0 for s in sizes):
        raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
    if not isinstance(est.mlflow, (type(None), bool, str)) or est.mlflow == "":
        bad("mlflow", "None, a bool or a run name (a non-empty str)")
    if est.dtype not in (None, "float32", "float64", np.float32, np.float64):
        bad("dtype", "None, 'float32' or 'float64'")
    try:
        parse_shard(est.shard)
    except InputError as exc:
        raise ValueError(f"The 'shard' parameter of {name}: {exc}") from None
    if not isinstance(est.random_state, (type(None), numbers.Integral, np.random.RandomState)) \
            or isinstance(est.random_state, bool):
        bad("random_state", "an int, a numpy.random.RandomState instance or None")
    return [int(s) for s in sizes]


# ---- the early-stopping split, as sklearn's train_test_split ----------------------------
