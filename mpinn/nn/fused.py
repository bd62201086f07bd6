"""Optional compiled update: each optimizer's blocked numpy passes as ONE loop per element.

Used by nn/optim.py when numba is installed (`pip install mpinn[fast]`) and MPINN_NUMBA is not
"0". Each kernel performs exactly the operations of the numpy path, in the same order and in
the same precision, so the results are bit for bit the same (tests/test_fused.py): numpy
computes ``float32_array * python_float`` in float32 but ``float32_array * numpy.float64`` in
float64, rounded on store; the kernels receive each scalar already in the dtype numpy would
compute in (``scalar_for``). error_model="numpy" lets LLVM vectorise the division (the default
Python error model checks every division for zero); no fastmath, so no reassociation and no
fused multiply-add. No MPI here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

_kernels = None


def available():
    """The compiled kernels, or None (numba missing, or MPINN_NUMBA=0)."""
    global _kernels
    if _kernels is None:
        _kernels = _compile() if os.environ.get("MPINN_NUMBA", "1") != "0" else False
    return _kernels or None


def scalar_for(value, dtype):
    """``value`` as numpy would use it against an array of ``dtype``: a Python float (weak)
    in the array's dtype, a numpy float64 (strong) as float64."""
    return np.float64(value) if type(value) is np.float64 else dtype.type(value)


def weak(*values):
    """True if numpy would compute with each of ``values`` in the array's own dtype (Python
    numbers); the kernels assume it for every scalar but Adam's step size."""
    return all(type(v) in (int, float, bool) for v in values)


def _compile():
    try:
        import numba
    except ImportError:
        return False
    return {np.dtype(t): Warmed(_kernels_for(numba, t), np.dtype(t)) for t in (np.float32, np.float64)}


class Warmed(Mapping):
    """A dtype's kernels by name, each warmed (``warm``) at its first lookup.

    numba compiles at a kernel's first call and writes its on-disk cache then (cache=True):
    every rank of a node doing that at once compiles the same code and writes the same files.
    The ranks of a machine take turns instead (``_machine_lock``): the first compiles and
    writes, the others find the cache written and load it. Only the kernels an optimizer uses
    are warmed (loading one from the cache takes a few tenths of a second)."""

    def __init__(self, kernels, dtype):
        self._cold, self._dtype, self._ready = kernels, dtype, {}

    def __getitem__(self, name):
        kernel = self._ready.get(name)
        if kernel is None:
            kernel = self._cold[name]
            with _machine_lock():
                warm(name, kernel, self._dtype)
            self._ready[name] = kernel
        return kernel

    def __iter__(self):
        return iter(self._cold)

    def __len__(self):
        return len(self._cold)


def warm(name, kernel, dtype):
    """Call ``kernel`` once on a few elements with the argument types the optimizers pass
    (nn/optim.py's _fused: arrays and scalars of ``dtype``, Adam's step size float64), so that
    its signature is compiled, or loaded from numba's cache, now."""
    d = dtype.type
    a = [np.zeros(4, dtype) for _ in range(4)]
    if name == "gd":
        kernel(a[0], a[1], True, d(0), True, d(1), d(0))
    elif name == "sgd":
        kernel(a[0], a[1], a[2], True, d(0), True, d(1), d(0), d(0), False)
    else:
        kernel(a[0], a[1], a[2], a[3], True, d(0), True, d(1), d(0.9), d(0.999), d(0.1), d(0.001), d(1e-8),
               np.float64(0))


def _machine_lock():
    """An exclusive lock that the processes of one machine share (a file in its temporary
    directory, flock); no lock where fcntl is missing."""
    import contextlib
    import tempfile

    try:
        import fcntl
    except ImportError:
        return contextlib.nullcontext()
    path = os.path.join(tempfile.gettempdir(), f"mpinn-numba-{os.getuid()}.lock")

    @contextlib.contextmanager
    def held():
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    return held()


def _kernels_for(numba, cast):
    """The three kernels for arrays of scalar type ``cast``. Every scalar but Adam's step size
    arrives in the arrays' dtype, so each operation rounds as numpy's does; the one float64
    product (Adam's step size times m) is rounded back with ``cast``. Explicit casts on the
    other operations would be no-ops, and they stop LLVM from vectorising the loop."""
    jit = numba.njit(nogil=True, error_model="numpy", boundscheck=False, cache=True)

    # The gradient finish (L2, division) is written out in each kernel on purpose: called as a
    # shared jitted helper it stops the loop from vectorising (Adam f32 over the big MLP,
    # bench/fused_adam.py: 2.8 ms with the helper against 0.5 ms inline).
    @jit
    def gd(p, g, l2, alpha, divide, weight, neg_lr):
        for i in range(p.shape[0]):  # not range(lo, hi): i >= 0 must be evident to vectorise
            gi = g[i]
            if l2:
                gi = gi + p[i] * alpha
            if divide:
                gi = gi / weight
            p[i] = p[i] + gi * neg_lr

    @jit
    def sgd(p, g, vel, l2, alpha, divide, weight, lr, mu, nesterov):
        for i in range(p.shape[0]):
            gi = g[i]
            if l2:
                gi = gi + p[i] * alpha
            if divide:
                gi = gi / weight
            gi = gi * lr
            vi = vel[i] * mu - gi
            vel[i] = vi
            if nesterov:
                p[i] = p[i] + (vi * mu - gi)
            else:
                p[i] = p[i] + vi

    @jit
    def adam(p, g, m, v, l2, alpha, divide, weight, b1, b2, c1, c2, eps, neg_lr):
        for i in range(p.shape[0]):
            gi = g[i]
            if l2:
                gi = gi + p[i] * alpha
            if divide:
                gi = gi / weight
            mi = m[i] * b1 + gi * c1
            vi = v[i] * b2 + (gi * gi) * c2
            m[i] = mi
            v[i] = vi
            p[i] = p[i] + cast(mi * neg_lr) / (np.sqrt(vi) + eps)

    return {"gd": gd, "sgd": sgd, "adam": adam}


def segments(n, decay):
    """[(start, stop, with_l2)] covering [0, n) in order: the ``decay`` ranges and the gaps."""
    out, pos = [], 0
    for a, b in sorted(decay):
        if a > pos:
            out.append((pos, a, False))
        out.append((a, b, True))
        pos = b
    if pos < n:
        out.append((pos, n, False))
    return out
