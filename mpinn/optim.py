"""Optimizers that update a flat parameter buffer in place from a flat gradient buffer.

No MPI here: every rank runs the same update on the same reduced gradient, so the parameters
stay identical without communication. The arithmetic follows scikit-learn's SGDOptimizer and
AdamOptimizer operation by operation (same products, same order), so a run matches sklearn's
to rounding. The gradient buffer is used as scratch: it is recomputed every step.
"""

from __future__ import annotations

import numpy as np

SOLVERS = ("gd", "sgd", "adam")
# Elements per block of a blocked update: 5 float32 buffers of 128 KiB stay in L2 cache.
BLOCK = 1 << 15
SCHEDULES = ("constant", "invscaling", "adaptive")


class GradientDescent:
    """Plain gradient descent: w <- w - lr * dL/dw."""

    name = "gd"

    def __init__(self, n_params, dtype, lr=0.001, **_):
        self.learning_rate_init = float(lr)
        self.learning_rate = float(lr)

    def step(self, params, grad):
        grad *= -self.learning_rate
        params += grad

    def epoch_end(self, samples_seen):
        pass

    def trigger_stopping(self):
        """Asked when the loss stopped improving; True means stop now."""
        return True

    def state(self):
        return {"learning_rate": self.learning_rate}, {}

    def load_state(self, scalars, arrays):
        self.learning_rate = float(scalars["learning_rate"])


class SGD(GradientDescent):
    """SGD with momentum (optionally Nesterov) and constant/invscaling/adaptive rates.

    v <- momentum*v - lr*g; w <- w + v, or with Nesterov w <- w + (momentum*v - lr*g).
    invscaling: lr = lr0 / (t + 1)**power_t after each epoch, t = samples seen.
    adaptive: when the loss stalls, lr /= 5 instead of stopping, until lr <= 1e-6.
    """

    name = "sgd"

    def __init__(self, n_params, dtype, lr=0.001, momentum=0.9, nesterov=True,
                 schedule="constant", power_t=0.5, **_):
        super().__init__(n_params, dtype, lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.schedule = schedule
        self.power_t = float(power_t)
        self.velocity = np.zeros(n_params, dtype=dtype)
        self._scratch = np.empty(n_params, dtype=dtype) if self.nesterov else None

    def step(self, params, grad):
        mu, lr = self.momentum, self.learning_rate
        for lo in range(0, len(params), BLOCK):  # blocked as Adam.step, same numbers
            hi = lo + BLOCK
            v, g, p = self.velocity[lo:hi], grad[lo:hi], params[lo:hi]
            v *= mu
            g *= lr
            v -= g
            if self.nesterov:
                s = self._scratch[lo:hi]
                np.multiply(v, mu, out=s)
                s -= g
                p += s
            else:
                p += v

    def epoch_end(self, samples_seen):
        if self.schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (samples_seen + 1) ** self.power_t

    def trigger_stopping(self):
        if self.schedule != "adaptive" or self.learning_rate <= 1e-6:
            return True
        self.learning_rate /= 5.0
        return False

    def state(self):
        return {"learning_rate": self.learning_rate}, {"velocity": self.velocity}

    def load_state(self, scalars, arrays):
        self.learning_rate = float(scalars["learning_rate"])
        self.velocity[...] = arrays["velocity"]


class Adam(GradientDescent):
    """Adam (Kingma & Ba) with the bias correction folded into the step size, as sklearn."""

    name = "adam"

    def __init__(self, n_params, dtype, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **_):
        super().__init__(n_params, dtype, lr)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.t = 0
        self.m = np.zeros(n_params, dtype=dtype)
        self.v = np.zeros(n_params, dtype=dtype)
        self._tmp = np.empty(n_params, dtype=dtype)

    def step(self, params, grad):
        self.t += 1
        self.learning_rate = (
            self.learning_rate_init * np.sqrt(1 - self.beta_2**self.t) / (1 - self.beta_1**self.t)
        )
        b1, b2, c1, c2 = self.beta_1, self.beta_2, 1 - self.beta_1, 1 - self.beta_2
        eps, neg_lr = self.epsilon, -self.learning_rate
        # Block by block, so the 12 passes over a block run in cache, not 12 passes over
        # all buffers through memory; elementwise, hence the same numbers as unblocked.
        for lo in range(0, len(params), BLOCK):
            hi = lo + BLOCK
            m, v, g, p = self.m[lo:hi], self.v[lo:hi], grad[lo:hi], params[lo:hi]
            tmp = self._tmp[: len(g)]
            m *= b1
            np.multiply(g, c1, out=tmp)
            m += tmp
            np.multiply(g, g, out=tmp)
            tmp *= c2
            v *= b2
            v += tmp
            # update = -lr * m / (sqrt(v) + eps); grad is free scratch now.
            np.sqrt(v, out=tmp)
            tmp += eps
            np.multiply(m, neg_lr, out=g)
            g /= tmp
            p += g

    def state(self):
        return {"learning_rate": self.learning_rate, "t": self.t}, {"m": self.m, "v": self.v}

    def load_state(self, scalars, arrays):
        self.learning_rate = float(scalars["learning_rate"])
        self.t = int(scalars["t"])
        self.m[...] = arrays["m"]
        self.v[...] = arrays["v"]


def make_optimizer(solver, n_params, dtype, **hyper):
    """The optimizer for ``solver`` ('gd', 'sgd', 'adam') over a buffer of n_params."""
    classes = {"gd": GradientDescent, "sgd": SGD, "adam": Adam}
    if solver not in classes:
        raise ValueError(f"unknown solver {solver!r}; choose from {SOLVERS}")
    return classes[solver](n_params, np.dtype(dtype), **hyper)
