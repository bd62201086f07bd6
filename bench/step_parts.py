"""Where one training step's time goes: milliseconds per step in each part, per rank.

    mpiexec -n 2 python bench/step_parts.py --data out/bench/big.h5 [--sync allreduce|sharded|shm]

Wraps the parts of a step with timers for one epoch of the big MLP (global batch 256, f32,
adam): loss_grad_sum (forward + backward: the matmuls and the elementwise work), the step's
collectives (Allreduce; or Reduce_scatter_block, Allgather and the batch-weight Iallreduce's
wait; with shm: the fence and the slice sums; including waiting for the slower rank), the
optimizer update (L2 term and division folded in; compiled when numba is installed,
MPINN_NUMBA=0 for numpy) and, with shm, the wait until every rank's slice is updated.
Whatever is left of the step is gathering rows and Python.
"""

from __future__ import annotations

import argparse
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import emit  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sync", default="auto")
    p.add_argument("--solver", default="adam")
    a = p.parse_args(argv)
    from mpinn.parallel.comm import world
    from mpinn.train.config import TrainConfig
    from mpinn.train.problem import load_problem
    from mpinn.train.loop import Trainer

    comm = world()
    cfg = TrainConfig(data=a.data, hidden=tuple(int(h) for h in a.hidden.split(",")), batch_size=a.batch,
                      epochs=2, dtype="float32", tol=0.0, n_iter_no_change=10**9, sync=a.sync,
                      solver=a.solver).validate()
    tr = Trainer(cfg, load_problem(cfg, comm), comm, log=lambda line: None)
    acc = {}

    def wrap(obj, name, label):
        f = getattr(obj, name)

        def timed(*args, **kw):
            t = time.perf_counter()
            out = f(*args, **kw)
            acc[label] = acc.get(label, 0.0) + time.perf_counter() - t
            return out

        setattr(obj, name, timed)

    parts = [(tr.model, "loss_grad_sum", "forward+backward"), (comm, "allreduce_sum", "collectives"),
             (comm, "reduce_scatter_block_sum", "collectives"),
             (comm, "allgather_in_place", "collectives"), (comm, "wait_all", "collectives"),
             (tr.optimizer, "step", "optimizer (incl. L2, /weight)")]
    if tr.sync.name == "shm":  # the fence and slice sums; then the wait for every slice's update
        parts += [(tr.sync, "reduce", "collectives"), (tr.sync, "publish", "wait (parameters published)")]
    for obj, name, label in parts:
        wrap(obj, name, label)
    tr.run_epoch()  # warm-up epoch, not counted
    acc.clear()
    t0 = time.perf_counter()
    tr.run_epoch()
    total = time.perf_counter() - t0
    steps = tr.schedule.n_steps
    mine = {k: v / steps * 1e3 for k, v in acc.items()}
    mine["whole step"] = total / steps * 1e3
    mine["rest (rows, Python)"] = mine["whole step"] - sum(v for k, v in mine.items() if k != "whole step")
    ranks = comm.gather_json(mine)
    if comm.rank == 0:
        emit({"ranks": comm.size, "sync": tr.sync.name, "ms_per_step": ranks})
    return 0


if __name__ == "__main__":
    sys.exit(main())
