"""The GEMM-only limit: the matmuls of one training step of an MLP, and nothing else.

Per step and rank, with b rows of the global batch: forward X@W for every layer, backward
A.T@delta (weight gradient) for every layer and delta@W.T for every layer but the first:
exactly the matmuls mpinn's loss_grad_sum does, into preallocated outputs. Under mpiexec -n N
each rank takes b = global_batch / N rows and all ranks run at once (so they share the
machine as mpinn's ranks do); samples/s = global batch * steps / the slowest rank's time.

    mpiexec -n 2 python bench/gemm_limit.py --sizes 784,512,512,10 --batch 256
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import blas_info, emit  # noqa: E402


def matmuls(W, A, D, G):
    """One step's matmuls into preallocated arrays: forward A[i] @ W[i], backward A[i].T @ D[i]
    for every layer and D[i] @ W[i].T for every layer but the first."""
    L = len(W)
    for i in range(L):
        np.matmul(A[i], W[i], out=A[i + 1])
    for i in range(L - 1, -1, -1):
        np.matmul(A[i].T, D[i], out=G[i])
        if i > 0:
            np.matmul(D[i], W[i].T, out=D[i - 1])


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="784,512,512,10")
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seconds", type=float, default=1.0, help="per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mpi", action="store_true", help="run as an MPI job (else one process)")
    a = p.parse_args(argv)
    rank, size, comm = 0, 1, None
    if a.mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
    sizes = [int(s) for s in a.sizes.split(",")]
    b = a.batch // size + (1 if rank < a.batch % size else 0)
    dt = np.dtype(a.dtype)
    rng = np.random.default_rng(rank)
    W = [rng.standard_normal((i, o)).astype(dt) for i, o in zip(sizes[:-1], sizes[1:])]
    A = [rng.standard_normal((b, n)).astype(dt) for n in sizes]
    D = [rng.standard_normal((b, n)).astype(dt) for n in sizes[1:]]
    G = [np.empty_like(w) for w in W]

    def step():
        matmuls(W, A, D, G)

    for _ in range(5):
        step()
    # Steps per round from a short calibration, agreed by all ranks (max), so they stay together.
    t0 = time.perf_counter()
    for _ in range(10):
        step()
    per = (time.perf_counter() - t0) / 10
    steps = max(10, int(a.seconds / max(per, 1e-7)))
    if comm is not None:
        steps = comm.allreduce(steps, op=MPI.MAX)
    rates = []
    for _ in range(a.rounds):
        if comm is not None:
            comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter() - t0
        if comm is not None:
            elapsed = comm.allreduce(elapsed, op=MPI.MAX)
        rates.append(a.batch * steps / elapsed)
    if rank == 0:
        flops = 2 * sum(i * o for i, o in zip(sizes[:-1], sizes[1:])) * 3 - 2 * sizes[0] * sizes[1]
        emit({"ranks": size, "sizes": sizes, "batch": a.batch, "rows_per_rank": b,
              "samples_per_second": max(rates), "rounds": rates,
              "gflops": max(rates) * flops / 1e9, "blas": blas_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
