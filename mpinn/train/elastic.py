"""Elastic training: the in-memory snapshots a run rolls back to when a rank dies. No MPI here
(the communicator's revoke, agree and shrink are parallel/comm.py's; the CLI drives recovery).

A snapshot is what a checkpoint holds (Trainer.checkpoint_state, optimizer state whole on every
rank), copied in memory: at the start of the run, every ``every`` steps inside an epoch and at
every epoch's end. When a rank dies, the survivors agree on the newest snapshot that all of them
hold and continue from it on the smaller communicator, as a resume on N-1 ranks would: the
batches do not depend on the rank count, so the model ends as an uninterrupted run's.

Why a snapshot and a replay rather than a copy of the state before every update: the copy
would cost every step (optimizer state included), the replay costs at most ``every`` steps
once per failure; and with --sync sharded a dead rank's optimizer slice exists nowhere else,
while the snapshot holds the whole state on every rank (gathered once per snapshot).

Survivors are at most one step apart (a blocking collective completes only once every rank has
entered it), so the newest snapshot one survivor took is at most one snapshot newer than
another's: keeping three covers every case.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from mpinn.errors import JobError

# Steps inside an epoch between snapshots (and one at every epoch's end). With 50, the big MLP's
# sharded run spent 2.3-2.6 % of its training time on them (docs/performance.md), near the 3 %
# allowed; 100 halves that, for at most 100 steps replayed after a death.
SNAPSHOT_EVERY = 100


class RankLost(JobError):
    """A rank died and elastic recovery is off or impossible (exit 75: resumable)."""

    exit_code = 75


class Snapshots:
    """Copies of the training state, keyed by (global step, epoch-end) so that keys order them."""

    def __init__(self, every: int = SNAPSHOT_EVERY, keep: int = 3):
        self.every, self.keep = every, keep
        self._held = {}  # key -> (scalars, arrays, scaler)
        self.seconds = 0.0  # spent taking them: elastic mode's cost without a failure

    @staticmethod
    def key(global_step: int, at_epoch_end: bool) -> int:
        return 2 * global_step + int(at_epoch_end)

    def due(self, trainer) -> bool:
        """A snapshot inside an epoch now? Never with model averaging (--sync local:K): its
        ranks hold the same state only where it averages, at epoch ends among others."""
        return not trainer.sync.local and trainer.loop.global_step % self.every == 0

    def take(self, trainer, at_epoch_end: bool):
        """Collective (a sharded optimizer state is gathered on every rank)."""
        start = time.perf_counter()
        scalars, arrays = trainer.checkpoint_state(everywhere=True)
        held = {name: np.array(a, copy=True) for name, a in arrays.items()}
        scaler = getattr(trainer.problem, "scaler", None)
        self._held[self.key(trainer.loop.global_step, at_epoch_end)] = (copy.deepcopy(scalars), held, scaler)
        for old in sorted(self._held)[:-self.keep]:
            del self._held[old]
        self.seconds += time.perf_counter() - start

    def newest_key(self) -> int:
        return max(self._held, default=-1)

    def agreed(self, comm):
        """Collective over the survivors: (key, scalars, arrays, scaler) of the newest snapshot
        every survivor holds."""
        key = int(comm.allreduce(np.array([self.newest_key()], dtype=np.int64), "min")[0])
        have = np.array([key in self._held], dtype=np.int64)
        if key < 0 or not comm.allreduce(have, "min")[0]:
            raise RankLost("a rank was lost and the survivors hold no common snapshot to continue from; "
                           "resume from the latest checkpoint")
        scalars, arrays, scaler = self._held[key]
        # Later snapshots are of the abandoned future; the replay takes its own.
        for later in [k for k in self._held if k > key]:
            del self._held[later]
        return key, copy.deepcopy(scalars), {name: a.copy() for name, a in arrays.items()}, scaler


def truncate_metrics(path: str, last_epoch: int):
    """Drop the epoch records after ``last_epoch`` from a metrics file (JSON lines or CSV): the
    run continues from a snapshot of that epoch and writes them again. A partial last line (a
    rank died while writing it) goes too."""
    import csv
    import json
    import os

    if not os.path.exists(path):
        return
    with open(path, newline="") as fh:
        lines = fh.readlines()
    kept = []
    if path.lower().endswith(".csv"):
        header = next(csv.reader(lines[:1]), None)
        if header is None:
            return
        at = header.index("epoch") if "epoch" in header else None
        kept = lines[:1]
        for line in lines[1:]:
            row = next(csv.reader([line]), [])
            if line.endswith("\n") and at is not None and len(row) == len(header) and int(row[at]) <= last_epoch:
                kept.append(line)
    else:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if line.endswith("\n") and (not isinstance(record.get("epoch"), int) or record["epoch"] <= last_epoch):
                kept.append(line)
    tmp = path + ".truncating"
    with open(tmp, "w", newline="") as fh:
        fh.writelines(kept)
    os.replace(tmp, path)
