"""The MLP's activations and their derivatives, in place and allocation-free. No MPI here.

Lookup tables by name (as scikit-learn's ACTIVATIONS and DERIVATIVES): model.py applies them.
"""

from __future__ import annotations

import numpy as np

HIDDEN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
OUTPUT_ACTIVATIONS = ("identity", "logistic", "softmax", "exp")
# Output activation -> the loss it is paired with; each pair has delta = output - target
# (canonical link). "exp" is MLPRegressor(loss="poisson")'s log link.
LOSS_FOR_OUTPUT = {"softmax": "log_loss", "logistic": "binary_log_loss", "identity": "squared_error",
                   "exp": "poisson"}


# Activations work in place on z (m, n); ``work`` is a scratch array of z's shape and ``col``
# one of shape (m, 1), neither overlapping z. Broadcasting ufuncs (z - col, z + b) allocate an
# iterator buffer of up to 8,192 elements on every call, so the step spreads the broadcast
# operand into ``work`` with np.copyto (which does not) and combines arrays of equal shape.
def _identity(z, work, col):
    pass


def _logistic(z, work, col):
    # 1/(1+exp(-z)), as scipy's expit (sklearn) rounds it; exp overflowing to inf gives 0.
    with np.errstate(over="ignore"):
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1
        np.reciprocal(z, out=z)


def _tanh(z, work, col):
    np.tanh(z, out=z)


def _relu(z, work, col):
    np.maximum(z, 0, out=z)


def _softmax(z, work, col):
    # The ufuncs' own reduce (not np.max/np.sum): same result, no Python wrapper per call.
    np.maximum.reduce(z, axis=1, out=col, keepdims=True)
    np.copyto(work, col)
    np.subtract(z, work, out=z)
    np.exp(z, out=z)
    np.add.reduce(z, axis=1, out=col, keepdims=True)
    np.copyto(work, col)
    z /= work


def _exp(z, work, col):
    np.exp(z, out=z)


ACTIVATE = {"identity": _identity, "logistic": _logistic, "tanh": _tanh, "relu": _relu, "softmax": _softmax,
            "exp": _exp}


def _identity_derivative(a, delta, scratch):
    pass


def _logistic_derivative(a, delta, scratch):
    delta *= a
    np.subtract(1, a, out=scratch)
    delta *= scratch


def _tanh_derivative(a, delta, scratch):
    np.multiply(a, a, out=scratch)
    np.subtract(1, scratch, out=scratch)
    delta *= scratch


def _relu_derivative(a, delta, scratch):
    # relu output is 0 where its input was <= 0 and never negative (maximum(-0., 0) is +0.), so
    # sign(a) is a > 0 as 0/1, in a's dtype (np.greater's bools are cast through a buffer).
    np.sign(a, out=scratch)
    delta *= scratch


DERIVATIVE = {
    "identity": _identity_derivative,
    "logistic": _logistic_derivative,
    "tanh": _tanh_derivative,
    "relu": _relu_derivative,
}
