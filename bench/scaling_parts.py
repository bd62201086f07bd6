"""The parts of one training step, measured for the scaling model (bench/scaling_model.py).

    mpiexec -n 1 python bench/scaling_parts.py      # compute and update curves, one rank
    mpiexec -n 2 python bench/scaling_parts.py      # the same with both ranks busy, + collectives

Each part is timed inside an emulated step: before every timed call the rest of a step runs
(untimed), so the caches hold what a real step leaves there (timed alone, in a tight loop, the
forward/backward pass and the Allreduce ran 10-50 % faster than inside training). Every rank
does the same at the same time (a barrier before each point): with 2 ranks the figures include
the two ranks' contention for memory bandwidth and the shared L3. Points are measured in rounds
(each visits every point); a figure is the median of a visit's calls, max over ranks (the
slowest rank sets a step's pace), min over rounds (a burst of someone else's load spoils one).

1. compute(r), r = 1, 2, 4, ... 256 rows on this rank (784-512-512-10, float32, softmax):
   "compute" the batch gathered as Trainer.step does (np.take of r random rows of this rank's
             shard of 60,000 x 784 and of the int16 class codes, one-hot per batch), then
             mpinn.nn.model.MLP.loss_grad_sum on them; before each call, an Adam update of all P
             parameters (the ones forward reads next), as a replicated step does. "spread":
             the calls' (84th - 16th percentile) / 2, a normal's sigma (the step-to-step jitter).
   "matmul"  the step's matmuls alone, exactly as bench/gemm_limit.py's step() (for reference).
2. update(n), n = ceil(P / N), N = 1, 2, 4, ... 1024 (P = 669,706 parameters):
   mpinn.nn.optim.make_optimizer(solver, n, float32).step, "adam" and "sgd"; when step takes
   (params, grad, weight, alpha, decay) the L2 term and the division by the batch weight are
   fused into it ("fused": true), else timed apart ("finish": MLP.finish_gradient's passes over
   n elements). Before each call: a forward/backward of 128 rows and a fresh gradient (the
   update scales its input; repeated scaling would reach slow denormal floats). "penalty": the
   sum of squares of n weights (np.dot). MLP.finish_gradient and MLP.penalty over all P too.
3. with 2 ranks, the collectives as mpinn/parallel/sync.py calls them: Allreduce(IN_PLACE, SUM),
   Reduce_scatter_block(send, recv) (not in place: MPICH 5.0's in-place variant aborts on
   large messages) and Allgather(IN_PLACE) of float32 buffers, and --sync shm's exchange
   (SharedMemory.reduce + publish: a fence, this rank's slice of every segment summed, a fence):
   "collectives"  8 B .. 16 MiB, the buffer rewritten and a barrier before each call;
   "in_situ"      both modes' steps emulated back to back as training runs them (128 rows per
                  rank, gather + forward/backward, the collectives at the gradient's size,
                  the update), every part timed: the collectives' cost in a step, and the
                  forward/backward after an Allgather of the parameters (sharded) against
                  after a local update of all of them (replicated);
   "reduce_local" MPI.SUM.Reduce_local (the reduction kernel alone, for gamma), 8 KiB .. 16 MiB.

Rank 0 prints one BENCH_JSON line with all curves; bench/run.py fits the model to them.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import time

import numpy as np
from mpi4py import MPI

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import gemm_limit  # noqa: E402
from common import blas_info, emit  # noqa: E402

SIZES = [784, 512, 512, 10]
SHARD_ROWS = 60000  # the big data set; a rank's shard is SHARD_ROWS / N rows
FILL = 1 << 15


class Points:
    """Timed points, measured in rounds (every point once per round, all ranks at once)."""

    def __init__(self, comm, budget, rounds):
        self.comm, self.budget, self.rounds = comm, budget, rounds
        self.items = []

    def add(self, fn, pre=None, scale=1.0):
        """Register fn; ``pre()`` runs untimed before every call. Returns the point's index."""
        self.items.append((fn, pre, scale))
        return len(self.items) - 1

    def _visit(self, fn, pre, budget, min_calls=4, max_calls=5000):
        for _ in range(2):
            if pre:
                pre()
            fn()
        self.comm.Barrier()
        times = []
        end = time.perf_counter() + budget
        while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() < end):
            if pre:
                pre()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        q16, q50, q84 = np.percentile(times, [16, 50, 84])
        return (self.comm.allreduce(float(q50), op=MPI.MAX), self.comm.allreduce(float(q84 - q16) / 2, op=MPI.MAX))

    def run(self):
        """(medians, spreads): per point the min over rounds of the max over ranks of the
        median, and of the spread (16th to 84th percentile / 2: a normal's sigma)."""
        best, spread = [math.inf] * len(self.items), [math.inf] * len(self.items)
        for _ in range(self.rounds):
            for i, (fn, pre, scale) in enumerate(self.items):
                med, sig = self._visit(fn, pre, self.budget * scale / self.rounds)
                best[i], spread[i] = min(best[i], med), min(spread[i], sig)
        return best, spread


class Step:
    """The state of an emulated training step on this rank: shard, model, full-size Adam."""

    def __init__(self, shard_rows, rank, P):
        from mpinn.nn.model import MLP
        from mpinn.nn.optim import make_optimizer

        self.rng = rng = np.random.default_rng(rank)
        self.model = MLP(SIZES, output="softmax", dtype=np.float32)
        self.params = self.model.init_params(np.random.RandomState(0))
        self.grad = self.model.new_buffer()
        X = np.empty((shard_rows, SIZES[0]), dtype=np.float32)
        X[...] = 0.5  # every page touched: the shard is resident, as in memory mode
        X[:, ::7] = rng.standard_normal((shard_rows, len(range(0, SIZES[0], 7))), dtype=np.float32)
        self.X, self.shard_rows = X, shard_rows
        codes = rng.integers(0, SIZES[-1], shard_rows)
        try:
            from mpinn.data.stream import EncodedRows

            self.Y = EncodedRows(codes, np.arange(SIZES[-1]), "softmax", np.float32)
        except Exception:  # noqa: BLE001 (another layout: one-hot floats, as encode_targets makes)
            self.Y = np.eye(SIZES[-1], dtype=np.float32)[codes]
        self.g0 = (rng.standard_normal(P) * 1e-2).astype(np.float32)
        self.fused = "weight" in inspect.signature(make_optimizer("sgd", 4, np.float32).step).parameters
        self.adam = make_optimizer("adam", P, np.float32, lr=1e-5)
        self._g = np.empty(P, dtype=np.float32)
        self._fwd = self.batch(128)[:2]

    def batch(self, r):
        """(gather, forward/backward, model, X rows, Y rows) for r rows, own workspace."""
        from mpinn.nn.model import MLP

        m = MLP(SIZES, output="softmax", dtype=np.float32)
        xb, yb = m.input_buffer(r), np.zeros((r, SIZES[-1]), dtype=np.float32)
        pool = [self.rng.choice(self.shard_rows, r, replace=False) for _ in range(16)]
        k = [0]

        def gather():
            idx = pool[k[0] % len(pool)]
            k[0] += 1
            np.take(self.X, idx, axis=0, out=xb)
            np.take(self.Y, idx, axis=0, out=yb)

        gather()
        return gather, lambda: m.loss_grad_sum(self.params, xb, yb, self.grad), m, xb, yb

    def forward_backward(self):
        """The step's first half (128 rows): what runs before the update and the reductions."""
        self._fwd[0]()
        self._fwd[1]()

    def update(self):
        """The replicated update: Adam over all P parameters, from a fresh gradient."""
        np.copyto(self._g, self.g0)
        if self.fused:
            self.adam.step(self.params, self._g, 256.0, 1e-4, [(0, len(self._g))])
        else:
            self.adam.step(self.params, self._g)


def compute_points(pts, step, rows_list):
    W = [step.rng.standard_normal((i, o)).astype(np.float32) for i, o in zip(SIZES[:-1], SIZES[1:])]
    G = [np.empty_like(w) for w in W]
    ids = {}
    for r in rows_list:
        gather, fwdbwd = step.batch(r)[:2]
        A = [step.rng.standard_normal((r, n)).astype(np.float32) for n in SIZES]
        D = [step.rng.standard_normal((r, n)).astype(np.float32) for n in SIZES[1:]]

        def matmuls(A=A, D=D):  # bench/gemm_limit.py's step, b = r
            gemm_limit.matmuls(W, A, D, G)

        def compute(gather=gather, fwdbwd=fwdbwd):
            gather()
            fwdbwd()

        ids[r] = (pts.add(compute, pre=step.update), pts.add(matmuls, scale=0.5))
    return lambda t, sd: {"rows": list(rows_list), "compute": [t[ids[r][0]] for r in rows_list],
                          "spread": [sd[ids[r][0]] for r in rows_list], "matmul": [t[ids[r][1]] for r in rows_list]}


def update_points(pts, step, P, ranks_list):
    from mpinn.nn.model import MLP
    from mpinn.nn.optim import make_optimizer

    p0 = (step.rng.standard_normal(P) * 5e-2).astype(np.float32)
    alpha, weight = 1e-4, 256.0
    tmp = np.empty(FILL, dtype=np.float32)
    ids = {}
    for N in ranks_list:
        n = -(-P // N)
        p, g = p0[:n].copy(), np.empty(n, dtype=np.float32)

        def pre(g=g, n=n):
            step.forward_backward()
            np.copyto(g, step.g0[:n])

        def finish(p=p, g=g, n=n):  # MLP.finish_gradient's passes over n elements
            for lo in range(0, n, FILL):
                hi = min(lo + FILL, n)
                t = tmp[: hi - lo]
                np.multiply(p[lo:hi], alpha, out=t)
                g[lo:hi] += t
            g /= weight

        row = []
        for solver in ("adam", "sgd"):
            opt = make_optimizer(solver, n, np.float32)
            if step.fused:
                row.append(pts.add(lambda opt=opt, p=p, g=g, d=[(0, n)]: opt.step(p, g, weight, alpha, d), pre))
            else:
                row.append(pts.add(lambda opt=opt, p=p, g=g: opt.step(p, g), pre))
        row.append(None if step.fused else pts.add(finish, pre))
        row.append(pts.add(lambda p=p: float(np.dot(p, p)), scale=0.2))
        ids[N] = row
    model = MLP(SIZES, output="softmax", dtype=np.float32)
    params, grad = p0.copy(), np.empty(P, dtype=np.float32)
    full = (pts.add(lambda: model.finish_gradient(params, grad, alpha, weight), lambda: np.copyto(grad, step.g0)),
            pts.add(lambda: model.penalty(params), scale=0.2))

    def result(t):
        out = {"ranks": list(ranks_list), "n": [-(-P // N) for N in ranks_list], "fused": step.fused}
        for j, key in enumerate(("adam", "sgd", "finish", "penalty")):
            out[key] = [0.0 if ids[N][j] is None else t[ids[N][j]] for N in ranks_list]
        out["finish_gradient_full"], out["penalty_full"] = t[full[0]], t[full[1]]
        return out

    return result


def reduce_local_points(pts):
    sizes, ids = [2 ** k for k in range(13, 25)], []  # 8 KiB .. 16 MiB
    for nbytes in sizes:
        a, b = np.ones(nbytes // 4, dtype=np.float32), np.ones(nbytes // 4, dtype=np.float32)
        ids.append(pts.add(lambda a=a, b=b: MPI.SUM.Reduce_local(a, b), lambda b=b: b.fill(1.0), scale=0.3))
    return lambda t: {"bytes": sizes, "seconds": [t[i] for i in ids]}


def collective_curves(comm, budget, rounds, elems, reps_max=300):
    """Median seconds per call of each collective (the buffer rewritten and a barrier before
    each call), max over ranks, min over rounds (each sweeps every size).
    Every rank runs the same number of calls (agreed from the first call's time)."""
    from mpinn.parallel.comm import Comm
    from mpinn.parallel.shared_memory import SharedMemory

    size = comm.Get_size()
    elems = sorted({n - n % size for n in elems})
    names = ("allreduce", "reduce_scatter", "allgather", "shm")
    out = {"bytes": [4 * n for n in elems], **{k: [math.inf] * len(elems) for k in names}}
    node = Comm(comm)
    for _ in range(rounds):
        for i, n in enumerate(elems):
            # shm: --sync shm's exchange (shared_memory.py): each rank's segment in a shared
            # window, fence, this rank sums its slice of every segment, fence.
            # n gradient floats (+ the 4 scalars each segment carries).
            grads, params = node.shared_arrays(n + 4, np.float32, "each"), node.shared_arrays(n, np.float32, "first")
            shm = SharedMemory.__new__(SharedMemory)
            shm.n, shm._grads, shm._params, shm.node, shm.nodes = n, grads, params, node, 1
            shm.lo, shm.hi = n * comm.Get_rank() // size, n * (comm.Get_rank() + 1) // size
            shm._wire()
            buf = grads.segments[comm.Get_rank()][:n]
            buf[...] = 1.0
            src = np.full(n, 0.5, dtype=np.float32)  # the "new gradient", rewritten before each call
            recv = np.empty(n // size, dtype=np.float32)
            ops = {
                "allreduce": lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM),
                "reduce_scatter": lambda: comm.Reduce_scatter_block(buf, recv, op=MPI.SUM),
                "allgather": lambda: comm.Allgather(MPI.IN_PLACE, buf),
                "shm": lambda: (shm.reduce(), shm.publish()),
            }
            for name in names:
                op = ops[name]
                for _ in range(2):
                    op()
                comm.Barrier()
                t0 = time.perf_counter()
                op()
                first = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
                reps = int(min(reps_max, max(5, budget / rounds / max(first, 1e-6))))
                times = []
                for _ in range(reps):
                    np.copyto(buf, src)  # untimed: as backward rewrites the gradient every step
                    comm.Barrier()
                    t0 = time.perf_counter()
                    op()
                    times.append(time.perf_counter() - t0)
                med = comm.allreduce(float(np.median(times)), op=MPI.MAX)
                out[name][i] = min(out[name][i], med)
            grads.free()
            params.free()
    return out


def emulated_steps(comm, step, P, rows, reps, rounds):
    """Both modes' steps, back to back in lockstep as training runs them (no barriers), each
    part timed: replicated = gather + forward/backward, Allreduce of [grad | 4], Adam over P;
    sharded = gather + forward/backward, Reduce_scatter_block of [grad | pad | 3] (not in place),
    Adam over the own slice, Allgather of the parameters in place (mpinn/parallel/sync.py's sequence).

    Per part: the median over steps of the max over ranks for the local work, and of the MIN
    over ranks for a collective (the last rank to arrive waits for nobody: its time is the
    collective's own), min over rounds."""
    from mpinn.nn.optim import make_optimizer

    size, rank = comm.Get_size(), comm.Get_rank()
    gather, _, model, xb, yb = step.batch(rows)
    block = max(-(-(P + 3) // size), 3)  # mpinn/parallel/sync.py's equal blocks
    total = block * size
    lo, hi = min(rank * block, P), min((rank + 1) * block, P)
    decay = [(0, P)]

    def fresh(extra):
        buf = np.zeros(P + extra, dtype=np.float32)
        buf[:P] = step.params
        return buf

    rep_params, rep_buf = step.params.copy(), np.zeros(P + 4, dtype=np.float32)
    rep_opt = make_optimizer("adam", P, np.float32, lr=1e-5)
    gathered, send = fresh(total - P), np.zeros(total, dtype=np.float32)
    recv = np.empty(block, dtype=np.float32)
    own_opt = make_optimizer("adam", hi - lo, np.float32, lr=1e-5)
    names = {"replicated": ("compute", "allreduce", "update"),
             "sharded": ("compute", "reduce_scatter", "update", "allgather")}
    best = {m: {k: math.inf for k in ks} for m, ks in names.items()}
    for _ in range(rounds):
        for mode, keys in names.items():
            times = np.zeros((reps, len(keys)))
            for i in range(-3, reps):
                t = [time.perf_counter()]
                gather()
                if mode == "replicated":
                    model.loss_grad_sum(rep_params, xb, yb, rep_buf[:P])
                    t.append(time.perf_counter())
                    comm.Allreduce(MPI.IN_PLACE, rep_buf, op=MPI.SUM)
                    t.append(time.perf_counter())
                    rep_opt.step(rep_params, rep_buf[:P], 256.0, 1e-4, decay)
                    t.append(time.perf_counter())
                else:
                    params = gathered[:P]
                    model.loss_grad_sum(params, xb, yb, send[:P])
                    t.append(time.perf_counter())
                    comm.Reduce_scatter_block(send, recv, op=MPI.SUM)
                    t.append(time.perf_counter())
                    own_opt.step(params[lo:hi], recv[: hi - lo], 256.0, 1e-4, [(0, hi - lo)])
                    t.append(time.perf_counter())
                    comm.Allgather(MPI.IN_PLACE, gathered)
                    t.append(time.perf_counter())
                if i >= 0:
                    times[i] = np.diff(t)
            every = np.array(comm.allgather(times))  # ranks x reps x parts
            for j, k in enumerate(keys):
                per_step = every[:, :, j].min(axis=0) if j in (1, 3) else every[:, :, j].max(axis=0)
                best[mode][k] = min(best[mode][k], float(np.median(per_step)))
    return {"rows": rows, "bytes": {"replicated": 4 * (P + 4), "sharded": 4 * (P + 3)}, **best}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, default=0.2, help="seconds of calls per measured point")
    p.add_argument("--rounds", type=int, default=5, help="visits of every point (min over rounds kept)")
    p.add_argument("--max-rows", type=int, default=256, help="compute curve for 1, 2, 4, ... rows up to this")
    p.add_argument("--steps", type=int, default=40, help="emulated steps per mode and round (2+ ranks)")
    p.add_argument("--max-ranks", type=int, default=1024, help="update curve for P/N, N = 1, 2, 4, ... this")
    a = p.parse_args(argv)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    P = sum(i * o + o for i, o in zip(SIZES[:-1], SIZES[1:]))
    t_start = time.perf_counter()
    step = Step(SHARD_ROWS // size, rank, P)
    pts = Points(comm, a.budget, a.rounds)
    rows_list = [2 ** k for k in range(int(math.log2(a.max_rows)) + 1)]
    ranks_list = [2 ** k for k in range(int(math.log2(a.max_ranks)) + 1)]
    compute = compute_points(pts, step, rows_list)
    update = update_points(pts, step, P, ranks_list)
    reduce_local = reduce_local_points(pts) if size > 1 else None
    t, sd = pts.run()
    res = {"ranks": size, "layers": SIZES, "n_params": P, "dtype": "float32", "rounds": a.rounds,
           "compute": compute(t, sd), "update": update(t)}
    if size > 1:
        res["reduce_local"] = reduce_local(t)
        res["collectives"] = collective_curves(comm, a.budget * 0.5, a.rounds,
                                               [2 ** k for k in range(1, 23)] + [P + 3, P + 4])

        res["in_situ"] = emulated_steps(comm, step, P, 256 // size, a.steps, 3)  # global batch 256
    res["seconds"] = time.perf_counter() - t_start
    if rank == 0:
        res["mpi_library"] = MPI.Get_library_version().strip().splitlines()[0]
        res["blas"] = blas_info()
        emit(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
