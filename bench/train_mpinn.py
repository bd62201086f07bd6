"""mpinn training throughput, per-step time breakdown and peak RSS, as one MPI job.

    mpiexec -n 2 python bench/train_mpinn.py --data out/bench/big.h5 --hidden 512,512 --batch 256

Reads the HDF5 file exactly as `mpinn train` does (load_problem: rank 0 checks the layout,
each rank reads its shard), trains with Trainer.fit for --epochs epochs (no early stop), and
rank 0 prints one BENCH_JSON line: samples/s of the best and of the mean epoch after the first
(the first pays for warm-up), the per-epoch breakdown (max over ranks) and every rank's peak
RSS next to the bytes of its shard and of the model state. With --steps K it only runs K
training steps (for the RSS figures on bigger files).
"""

from __future__ import annotations

import argparse
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import blas_info, current_rss_bytes, emit, peak_rss_bytes, pss_bytes  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=0, help="only this many steps (RSS runs)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--solver", default="adam")
    p.add_argument("--shuffle", default="global")
    p.add_argument("--overlap", action="store_true", help="per-layer Iallreduce during backward (--sync overlap)")
    p.add_argument("--sync", default="auto", help="auto, allreduce, sharded or shm")
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--stream", action="store_true", help="stream the shard from HDF5 (bounded memory)")
    a = p.parse_args(argv)

    import numpy as np

    from mpinn.parallel.comm import world
    from mpinn.train.config import TrainConfig
    from mpinn.train.problem import load_problem
    from mpinn.train.loop import Trainer

    comm = world()
    base_rss = peak_rss_bytes()
    cfg = TrainConfig(data=a.data, hidden=tuple(int(h) for h in a.hidden.split(",")), batch_size=a.batch,
                      epochs=a.epochs, dtype=a.dtype, solver=a.solver, shuffle=a.shuffle, tol=0.0,
                      n_iter_no_change=10**9, seed=0, sync=a.sync, warmup_epochs=a.warmup_epochs).validate()
    extra = {}
    if a.stream:
        extra["stream"] = True
    t0 = time.perf_counter()
    problem = load_problem(cfg, comm, **extra)
    load_seconds = time.perf_counter() - t0
    trainer = Trainer(cfg, problem, comm, log=lambda line: None, sync="overlap" if a.overlap else None)
    comm.barrier()
    if a.steps:
        t0 = time.perf_counter()
        for i, rows in enumerate(trainer.schedule.epoch(0)):
            if i == a.steps:
                break
            trainer.step(rows)
        history = [{"epoch": 0, "seconds": time.perf_counter() - t0}]
    else:
        trainer.fit()
        history = trainer.history
    model_bytes = trainer.sync.held_bytes()
    workspace = trainer.model._ws.nbytes if trainer.model._ws is not None else 0
    X = problem.X
    # The shard's bytes as stored (X rows + y), whether held in memory or streamed.
    shard_bytes = X.shape[0] * X.shape[1] * np.dtype(X.dtype).itemsize + np.asarray(problem.y).nbytes
    mine = {"rank": comm.rank, "peak_rss": peak_rss_bytes(), "rss_now": current_rss_bytes(), "pss_now": pss_bytes(),
            "base_rss": base_rss, "shard_bytes": int(shard_bytes),
            "resident_data_bytes": int(X.nbytes + np.asarray(problem.y).nbytes + trainer.Y.nbytes),
            "model_bytes": int(model_bytes), "workspace_bytes": int(workspace),
            "load_seconds": load_seconds}
    ranks = comm.gather_json(mine)
    trainer.release()  # --steps: the shared windows (--sync shm) are freed before MPI ends
    if comm.rank == 0:
        n = trainer.n_train
        secs = [h["seconds"] for h in history]
        timed = secs[1:] if len(secs) > 1 else secs
        out = {"ranks": comm.size, "layers": trainer.model.layer_sizes, "n_params": trainer.model.n_params,
               "n_train": n, "batch": trainer.batch_size, "epochs": len(history), "overlap": a.overlap,
               "sync": trainer.sync.name, "optimizer_state_bytes": trainer.sync.state_bytes(),
               "stream": a.stream, "shuffle": a.shuffle, "per_rank": ranks, "blas": blas_info(),
               "history": history}
        if not a.steps:
            out["samples_per_second"] = n / min(timed)
            out["samples_per_second_mean"] = n * len(timed) / sum(timed)
            best = history[1 + int(np.argmin(timed))] if len(secs) > 1 else history[0]
            out["best_epoch"] = best
        from mpinn.parallel.comm import library_info

        out["mpi"] = library_info()["mpi_library"]
        emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
