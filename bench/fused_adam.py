"""Does a compiled, fused Adam (numba, optional) beat mpinn's blocked numpy Adam? One process.

    python bench/fused_adam.py            # prints one BENCH_JSON line; needs `pip install numba`

Times optim.Adam.step (12 blocked numpy passes, the gradient finish included) against one
numba loop doing the same arithmetic per element, over the big MLP's 669,706 parameters, and
checks whether the two agree bit for bit. mpinn keeps an accelerator only if it is faster AND
gives the same numbers (docs/performance.md, "A compiled update?").
"""

from __future__ import annotations

import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import emit  # noqa: E402

N_PARAMS = 669706


def main():
    try:
        import numba
    except ImportError:
        emit({"skipped": "numba is not installed"})
        return 0
    from mpinn.optim import make_optimizer

    @numba.njit(cache=False, nogil=True)
    def adam_fused(p, g, m, v, weight, b1, b2, c1, c2, eps, neg_lr):
        for i in range(p.shape[0]):
            gi = g[i] / weight
            mi = m[i] * b1 + gi * c1
            vi = v[i] * b2 + (gi * gi) * c2
            m[i] = mi
            v[i] = vi
            p[i] = p[i] + (mi * neg_lr) / (np.sqrt(vi) + eps)

    out = {"numba": numba.__version__, "n_params": N_PARAMS}
    for dt in (np.float32, np.float64):
        rng = np.random.RandomState(0)
        p = rng.normal(size=N_PARAMS).astype(dt)
        g = rng.normal(size=N_PARAMS).astype(dt)
        opt = make_optimizer("adam", N_PARAMS, dt)
        p1, p2 = p.copy(), p.copy()
        m, v = np.zeros(N_PARAMS, dt), np.zeros(N_PARAMS, dt)
        same = True
        for t in range(1, 4):
            opt.step(p1, g.copy(), 256.0)
            lr = 0.001 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            adam_fused(p2, g.copy(), m, v, dt(256.0), dt(0.9), dt(0.999), dt(0.1), dt(1 - 0.999), dt(1e-8), dt(-lr))
            same = same and bool(np.array_equal(p1, p2))
        reps, scratch = 40, g.copy()
        t0 = time.perf_counter()
        for _ in range(reps):
            scratch[...] = g
            opt.step(p1, scratch, 256.0)
        t1 = time.perf_counter()
        for _ in range(reps):
            scratch[...] = g
            adam_fused(p2, scratch, m, v, dt(256.0), dt(0.9), dt(0.999), dt(0.1), dt(1 - 0.999), dt(1e-8), dt(-lr))
        t2 = time.perf_counter()
        out[np.dtype(dt).name] = {"numpy_ms": (t1 - t0) / reps * 1e3, "numba_ms": (t2 - t1) / reps * 1e3,
                                  "numpy_over_numba": (t1 - t0) / (t2 - t1), "bitwise_equal": same}
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
