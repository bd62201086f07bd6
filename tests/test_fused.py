"""The compiled update (mpinn/nn/fused.py, numba) gives the numpy update's bits.

Skipped where numba is not installed (it is an optional extra, `mpinn[fast]`). The numpy path
is the reference: it follows scikit-learn's optimizers operation by operation.
"""

import numpy as np
import pytest

from mpinn.nn import fused
from mpinn.nn import optim
from mpinn.nn.model import MLP
from mpinn.data.partition import even_bounds as slice_bounds
from mpinn.nn.model import weight_ranges

pytest.importorskip("numba")


def _run(solver, dtype, use_numba, monkeypatch, lr=0.01, warmup=1.0, schedule="constant", calls=None, **kw):
    monkeypatch.setattr(fused, "_kernels", None)
    monkeypatch.setenv("MPINN_NUMBA", "1" if use_numba else "0")
    if use_numba and calls is not None:  # count the kernel calls, so a silent fallback fails
        kernels = fused.available()
        counted = {dt: {name: _counting(f, name, calls) for name, f in ks.items()} for dt, ks in kernels.items()}
        monkeypatch.setattr(fused, "available", lambda: counted)
    model = MLP([300, 250, 7], dtype=dtype)  # 77,007 parameters, half of it above FUSED_MIN
    rng = np.random.RandomState(0)
    params = rng.normal(size=model.n_params).astype(dtype)
    opt = optim.make_optimizer(solver, model.n_params, dtype, lr=lr, schedule=schedule, **kw)
    opt.warmup_factor = warmup
    decay = weight_ranges(model, 0, model.n_params)
    for step in range(4):
        grad = rng.normal(size=model.n_params).astype(dtype) * 100
        opt.step(params, grad, 37.0, 1e-3, decay)
        opt.epoch_end(1000 * (step + 1))
    # And an unweighted step without L2, on a slice (the sharded update's call).
    b = slice_bounds(model.n_params, 2)
    sub = optim.make_optimizer(solver, b[2] - b[1], dtype, lr=lr, **kw)
    sub.step(params[b[1]:b[2]], rng.normal(size=b[2] - b[1]).astype(dtype))
    return params, opt


def _counting(kernel, name, calls):
    def call(*args):
        calls.append(name)
        return kernel(*args)
    return call


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver,kw", [("adam", {}), ("sgd", {"nesterov": True}), ("sgd", {"nesterov": False}),
                                       ("gd", {})])
@pytest.mark.parametrize("warmup", [1.0, 0.3])
def test_compiled_update_is_bitwise_the_numpy_update(monkeypatch, solver, kw, dtype, warmup):
    ref, ref_opt = _run(solver, dtype, False, monkeypatch, warmup=warmup, **kw)
    assert fused.available() is None
    calls = []
    got, got_opt = _run(solver, dtype, True, monkeypatch, warmup=warmup, calls=calls, **kw)
    assert calls.count(solver) == 4 * 4 + 1  # 4 steps x (W0, b0, W1, b1), then the slice
    assert np.array_equal(ref, got)
    for name, arr in ref_opt.state()[1].items():
        assert np.array_equal(arr, got_opt.state()[1][name])


def test_invscaling_rate_and_float64_scalars(monkeypatch):
    """A learning rate that is a numpy float64 is applied in float64, as numpy does."""
    ref, _ = _run("sgd", np.float32, False, monkeypatch, schedule="invscaling", lr=np.float64(0.05))
    got, _ = _run("sgd", np.float32, True, monkeypatch, schedule="invscaling", lr=np.float64(0.05))
    assert np.array_equal(ref, got)


def test_segments_cover_the_buffer_in_order():
    assert fused.segments(10, [(2, 4), (6, 8)]) == [(0, 2, False), (2, 4, True), (4, 6, False), (6, 8, True),
                                                     (8, 10, False)]
    assert fused.segments(5, []) == [(0, 5, False)]
    assert fused.segments(4, [(0, 4)]) == [(0, 4, True)]


def test_the_optimizers_use_only_the_warmed_signatures(monkeypatch):
    """fused.warm compiles (or loads) every signature the optimizers call: a step of each adds none."""
    monkeypatch.setattr(fused, "_kernels", None)
    monkeypatch.setenv("MPINN_NUMBA", "1")
    kernels = fused.available()
    before = {(dt, name): len(k.signatures) for dt, ks in kernels.items() for name, k in ks.items()}
    assert all(n == 1 for n in before.values()), before
    for dtype in (np.float32, np.float64):
        for solver, kw in (("adam", {}), ("sgd", {"nesterov": True}), ("gd", {})):
            _run(solver, dtype, True, monkeypatch, calls=[], **kw)
    assert {(dt, name): len(k.signatures) for dt, ks in kernels.items() for name, k in ks.items()} == before


LOAD = """
import sys
from mpinn.nn import fused
kernels = fused.available()
stats = [k.stats for ks in kernels.values() for k in ks.values()]
print(sum(sum(s.cache_misses.values()) for s in stats), sum(sum(s.cache_hits.values()) for s in stats))
"""


def test_processes_of_one_machine_compile_once_and_load_the_cache(tmp_path):
    """Three processes start at once with an empty cache: each of the 6 kernels (2 dtypes; here all
    are looked up, so all are warmed) is compiled by one process, which writes it to the cache, and
    loaded from it by the other two. Which process compiles which kernel is a race (the lock is
    taken per kernel), so the counts are summed."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "MPINN_NUMBA": "1", "TMPDIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", LOAD], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    counts = sorted(tuple(map(int, p.communicate(timeout=300)[0].split())) for p in procs)
    assert sum(m for m, _ in counts) == 6 and sum(h for _, h in counts) == 12, counts
    assert all(m + h == 6 for m, h in counts), counts
