"""Optimizers that update a flat parameter buffer in place from a flat gradient buffer.

No MPI here. ``step`` takes the gradient SUM over the global batch (as the reduction leaves
it) and finishes it in the same pass: adds alpha * w on the weight ranges (the L2 term) and
divides by the batch weight, then applies the update, block by block so each block's dozen
elementwise passes run in cache. Every operation is elementwise, so an optimizer over any
contiguous slice of the buffer (the sharded update) computes exactly the bits the whole-buffer
optimizer computes for that slice. The arithmetic follows scikit-learn's SGDOptimizer and
AdamOptimizer operation by operation, so a run matches sklearn's to rounding. The gradient
buffer is used as scratch.
"""

from __future__ import annotations

import numpy as np

from mpinn.nn import fused

SOLVERS = ("gd", "sgd", "adam")
STOCHASTIC_SOLVERS = ("sgd", "adam")  # scikit-learn's; "gd" is mpinn's plain w <- w - lr*g
SCHEDULES = ("constant", "invscaling", "adaptive")
# Elements per block of a blocked update: 5 float32 buffers of 128 KiB stay in L2 cache.
BLOCK = 1 << 15
# Updates of at least this many parameters use the compiled kernels when numba is installed
# (fused.py: the same bits, 3-4x faster); smaller ones never import numba (its import and
# first compile cost more than they save).
FUSED_MIN = BLOCK


class GradientDescent:
    """Plain gradient descent: w <- w - lr * dL/dw."""

    name = "gd"

    def __init__(self, n_params, dtype, lr=0.001, **_):
        self.n_params = int(n_params)
        self.dtype = np.dtype(dtype)
        self.learning_rate_init = float(lr)
        self.learning_rate = float(lr)
        # Linear warm-up multiplies the step size by this (set by the loop each step).
        self.warmup_factor = 1.0
        self._l2 = np.empty(min(self.n_params, BLOCK), dtype=self.dtype)

    def step(self, params, grad, weight=None, alpha=0.0, decay=()):
        """Update ``params`` from the gradient sum ``grad`` (same length, scratch afterwards).

        The gradient used is (grad + alpha * params on the ``decay`` ranges) / weight; ranges
        are (start, stop) positions within this buffer (the weight matrices, not the biases).
        """
        self._begin_step()
        lr = self.learning_rate * self.warmup_factor if self.warmup_factor != 1.0 else self.learning_rate
        n = len(params)
        weak = fused.weak(alpha, weight or 0.0, *self._weak_scalars(lr))
        kernels = fused.available() if n >= FUSED_MIN and weak else None
        if kernels is not None:
            dt = self.dtype
            a = fused.scalar_for(alpha, dt)
            w = fused.scalar_for(1.0 if weight is None else weight, dt)
            for lo, hi, l2 in fused.segments(n, decay if alpha else ()):
                self._fused(kernels[dt], params, grad, lo, hi, l2, a, weight is not None, w, lr)
            return
        for lo in range(0, n, BLOCK):
            hi = min(lo + BLOCK, n)
            g, p = grad[lo:hi], params[lo:hi]
            if alpha:
                for a, b in decay:
                    a, b = max(a, lo), min(b, hi)
                    if a < b:
                        t = self._l2[: b - a]
                        np.multiply(params[a:b], alpha, out=t)
                        grad[a:b] += t
            if weight is not None:
                g /= weight
            self._update(p, g, lo, hi, lr)

    def _begin_step(self):
        pass

    def _update(self, p, g, lo, hi, lr):
        g *= -lr
        p += g

    def _weak_scalars(self, lr):
        """The scalars the compiled kernel takes in the arrays' dtype (see fused.weak)."""
        return (lr,)

    def _fused(self, k, p, g, lo, hi, l2, alpha, divide, weight, lr):
        k["gd"](p[lo:hi], g[lo:hi], l2, alpha, divide, weight, fused.scalar_for(-lr, self.dtype))

    def epoch_end(self, samples_seen):
        pass

    def trigger_stopping(self):
        """Asked when the loss stopped improving; True means stop now."""
        return True

    def state(self):
        """(JSON scalars, arrays over this optimizer's slice)."""
        return {"learning_rate": self.learning_rate}, {}

    def load_state(self, scalars, arrays):
        self.learning_rate = float(scalars["learning_rate"])

    def state_bytes(self):
        """Bytes of per-parameter arrays this optimizer holds: its state and its scratch."""
        return sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray))


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
        self.velocity = np.zeros(self.n_params, dtype=self.dtype)
        self._scratch = np.empty(min(self.n_params, BLOCK), dtype=self.dtype) if self.nesterov else None

    def _update(self, p, g, lo, hi, lr):
        mu = self.momentum
        v = self.velocity[lo:hi]
        v *= mu
        g *= lr
        v -= g
        if self.nesterov:
            s = self._scratch[: hi - lo]
            np.multiply(v, mu, out=s)
            s -= g
            p += s
        else:
            p += v

    def _weak_scalars(self, lr):
        return (lr, self.momentum)

    def _fused(self, k, p, g, lo, hi, l2, alpha, divide, weight, lr):
        dt = self.dtype
        k["sgd"](p[lo:hi], g[lo:hi], self.velocity[lo:hi], l2, alpha, divide, weight, fused.scalar_for(lr, dt),
                 fused.scalar_for(self.momentum, dt), self.nesterov)

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
        self.m = np.zeros(self.n_params, dtype=self.dtype)
        self.v = np.zeros(self.n_params, dtype=self.dtype)
        self._tmp = np.empty(min(self.n_params, BLOCK), dtype=self.dtype)

    def _begin_step(self):
        self.t += 1
        self.learning_rate = (
            self.learning_rate_init * np.sqrt(1 - self.beta_2**self.t) / (1 - self.beta_1**self.t)
        )

    def _update(self, p, g, lo, hi, lr):
        b1, b2, c1, c2 = self.beta_1, self.beta_2, 1 - self.beta_1, 1 - self.beta_2
        m, v = self.m[lo:hi], self.v[lo:hi]
        tmp = self._tmp[: hi - lo]
        m *= b1
        np.multiply(g, c1, out=tmp)
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp *= c2
        v *= b2
        v += tmp
        # update = -lr * m / (sqrt(v) + eps); g is free scratch now.
        np.sqrt(v, out=tmp)
        tmp += self.epsilon
        np.multiply(m, -lr, out=g)
        g /= tmp
        p += g

    def _weak_scalars(self, lr):
        return (self.beta_1, self.beta_2, self.epsilon)  # the step size is float64, cast back in the kernel

    def _fused(self, k, p, g, lo, hi, l2, alpha, divide, weight, lr):
        dt, f = self.dtype, fused.scalar_for
        k["adam"](p[lo:hi], g[lo:hi], self.m[lo:hi], self.v[lo:hi], l2, alpha, divide, weight, f(self.beta_1, dt), f(self.beta_2, dt),
                  f(1 - self.beta_1, dt), f(1 - self.beta_2, dt), f(self.epsilon, dt), f(-lr, dt))

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
