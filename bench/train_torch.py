"""PyTorch (CPU) throughput on the same data, model, batch and epochs: 1 process, or
DistributedDataParallel over --procs processes with the gloo backend on this machine.

    python bench/train_torch.py --prefix out/bench/big --hidden 512,512 --batch 256 [--procs 2]

Runs with the Python that has torch (a separate benchmark venv; torch is never a dependency of
mpinn). Same recipe as mpinn's: Linear+ReLU layers, softmax cross-entropy, Adam(lr 1e-3,
weight_decay 1e-4), each epoch a fresh permutation cut into global batches of --batch rows,
of which each of the P processes takes its 1/P. One thread per process. samples/s from the
best epoch after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import emit, parse, peak_rss_bytes  # noqa: E402


def worker(a, rank, procs):
    import numpy as np
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(0)
    X = torch.from_numpy(np.ascontiguousarray(np.load(a.prefix + "_X.npy")))
    y = torch.from_numpy(np.load(a.prefix + "_y.npy").astype(np.int64))
    sizes = [X.shape[1], *(int(h) for h in a.hidden.split(",")), int(y.max()) + 1]
    layers = []
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(fi, fo))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    if procs > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", rank=rank, world_size=procs)
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    lossf = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)  # same permutation on every process
    n, b = len(X), a.batch
    secs = []
    for _ in range(a.epochs):
        if procs > 1:
            dist.barrier()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, b):
            idx = perm[start:start + b][rank::procs]
            xb, yb = X[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(xb), yb)
            loss.backward()
            opt.step()
        if procs > 1:
            dist.barrier()
        secs.append(time.perf_counter() - t0)
    timed = secs[1:] if len(secs) > 1 else secs
    out = {"procs": procs, "samples_per_second": n / min(timed),
           "samples_per_second_mean": n * len(timed) / sum(timed), "epoch_seconds": secs,
           "torch": torch.__version__, "peak_rss": peak_rss_bytes(), "threads": torch.get_num_threads()}
    if procs > 1:
        dist.destroy_process_group()
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--prefix", required=True)
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rank is not None:  # a DDP child
        out = worker(a, a.rank, a.procs)
        if a.rank == 0:
            emit(out)
        return 0
    if a.procs == 1:
        emit(worker(a, 0, 1))
        return 0
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    args = [sys.executable, __file__, "--prefix", a.prefix, "--hidden", a.hidden, "--batch", str(a.batch),
            "--epochs", str(a.epochs), "--procs", str(a.procs)]
    children = [subprocess.Popen(args + ["--rank", str(r)], env=env, stdout=subprocess.PIPE, text=True)
                for r in range(a.procs)]
    outs = [c.communicate()[0] for c in children]
    if any(c.returncode for c in children):
        print(json.dumps({"error": [c.returncode for c in children]}), file=sys.stderr)
        return 1
    emit(parse(outs[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
