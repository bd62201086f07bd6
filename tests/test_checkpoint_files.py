"""Checkpoint file names, pruning and durability order (mpinn/train/checkpoint.py). No MPI."""

import os

import numpy as np

from mpinn.train import checkpoint
from mpinn.train.checkpoint import Checkpointer, checkpoint_order, prune, resolve
from mpinn.parallel.comm import Comm
from mpinn.train.config import TrainConfig
from mpinn.parallel.comm import SerialComm
from mpinn.train.problem import problem_from_arrays
from mpinn.train.loop import Trainer


def test_more_than_a_million_steps_in_an_epoch(tmp_path):
    """Past 10^6 steps the step field has seven digits: `latest` still resolves, and pruning
    orders by number (text order would put ...-1000000 before ...-999999 and delete it)."""
    names = ["ckpt-000003-999998.h5", "ckpt-000003-999999.h5", "ckpt-000003-1000000.h5",
             "ckpt-000003-1000001.h5"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "latest").write_text(names[-1] + "\n")
    assert resolve(str(tmp_path)) == str(tmp_path / names[-1])
    assert sorted(names, key=checkpoint_order) == names
    prune(str(tmp_path), 2, names[-1])
    assert sorted(os.listdir(tmp_path)) == sorted(["latest", *names[-2:]])


def test_checkpoint_directory_is_synced_before_latest_names_it(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            events.append("fsync dir")
        return real_fsync(fd)

    def replace(src, dst):
        events.append("latest" if os.path.basename(dst) == "latest" else "checkpoint")
        return real_replace(src, dst)

    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(30, 3)), rng.randint(0, 2, 30)
    cfg = TrainConfig(hidden=(4,), epochs=1, batch_size=10).validate()
    comm = Comm(SerialComm())
    trainer = Trainer(cfg, problem_from_arrays(X, y, cfg, comm), comm, log=lambda line: None)
    trainer.fit()
    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    Checkpointer(str(tmp_path), comm).save(trainer)
    assert "latest" in events and events.index("fsync dir") < events.index("latest")
