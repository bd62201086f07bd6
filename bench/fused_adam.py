"""The optimizer update with and without the compiled kernels (mpinn/nn/fused.py). One process.

    python bench/fused_adam.py            # one BENCH_JSON line; the kernels need numba
    python bench/fused_adam.py --sizes 8,4,2 --reps 2     # a smoke run (tests/test_bench_scripts.py)

Times optim's step (gradient finish included: L2 on the weights, division by the batch
weight) on the big MLP's 669,706 parameters, as 12+ blocked numpy passes (MPINN_NUMBA=0's
path) and as one compiled loop, for adam and sgd in float32 and float64, and checks that both
leave the same bits. docs/performance.md, "The compiled update".
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import emit  # noqa: E402

SIZES = "784,512,512,10"


def timed(sizes, solver, dtype, compiled, reps=40):
    from mpinn.nn import fused
    from mpinn.nn.model import MLP
    from mpinn.nn.optim import make_optimizer
    from mpinn.nn.model import weight_ranges

    fused._kernels = None if compiled else False
    model = MLP(sizes, dtype=dtype)
    rng = np.random.RandomState(0)
    params = rng.normal(size=model.n_params).astype(dtype)
    grad = rng.normal(size=model.n_params).astype(dtype)
    scratch = np.empty_like(grad)
    decay = weight_ranges(model, 0, model.n_params)
    opt = make_optimizer(solver, model.n_params, dtype)
    for _ in range(3):  # warm-up (and the compile, or its cache load)
        scratch[...] = grad
        opt.step(params, scratch, 256.0, 1e-4, decay)
    t0 = time.perf_counter()
    for _ in range(reps):
        scratch[...] = grad
        opt.step(params, scratch, 256.0, 1e-4, decay)
    seconds = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        scratch[...] = grad
    copy = (time.perf_counter() - t0) / reps
    return (seconds - copy) * 1e3, params


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=SIZES, help=f"layer sizes (default {SIZES}: the big MLP)")
    p.add_argument("--reps", type=int, default=40, help="timed updates per figure (default 40)")
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    try:
        import numba
    except ImportError:
        emit({"skipped": "numba is not installed (pip install mpinn[fast])"})
        return 0
    out = {"numba": numba.__version__, "n_params": int(sum(a * b + b for a, b in zip(sizes, sizes[1:])))}
    for solver in ("adam", "sgd"):
        for dtype in (np.float32, np.float64):
            numpy_ms, p_numpy = timed(sizes, solver, dtype, False, a.reps)
            compiled_ms, p_compiled = timed(sizes, solver, dtype, True, a.reps)
            out[f"{solver} {np.dtype(dtype).name}"] = {
                "numpy_ms": numpy_ms, "compiled_ms": compiled_ms, "numpy_over_compiled": numpy_ms / compiled_ms,
                "bitwise_equal": bool(np.array_equal(p_numpy, p_compiled))}
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
