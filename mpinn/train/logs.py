"""Rank 0's outputs during training: the metrics file (JSONL or CSV) and a terminal progress bar."""

from __future__ import annotations

import csv
import json
import os
import sys
import time


class MetricsWriter:
    """One record per epoch: JSON lines, or CSV when the file name ends in .csv. A JSON lines
    file starts each run with the record ``first`` (the CLI: the resolved configuration).

    A resumed run appends to the file of the run it continues. CSV columns are fixed by the
    first record written (or the existing header); later keys outside them are dropped.
    """

    def __init__(self, path, append=False, first=None):
        """``first``: a record written before the epochs (a JSON lines file only: a CSV's
        columns are the epochs'), e.g. the run's resolved configuration."""
        self.path = path
        self.csv = path.lower().endswith(".csv")
        self.columns = None
        if self.csv and append and os.path.exists(path):
            with open(path, newline="") as fh:
                self.columns = next(csv.reader(fh), None)
        self.fh = open(path, "a" if append else "w", newline="" if self.csv else None)
        if first is not None and not self.csv:
            self.fh.write(json.dumps(first) + "\n")
            self.fh.flush()

    def write(self, record):
        if not self.csv:
            self.fh.write(json.dumps(record) + "\n")
        else:
            if self.columns is None:
                self.columns = list(record)
                csv.writer(self.fh).writerow(self.columns)
            csv.writer(self.fh).writerow(["" if record.get(k) is None else record.get(k) for k in self.columns])
        self.fh.flush()

    def close(self):
        self.fh.close()


def epoch_records(lines):
    """The epoch records of a JSON lines metrics file's ``lines``, without the run records
    (``{"config": ...}``, one per run and per resume) that come before a run's epochs."""
    return [r for r in (json.loads(line) for line in lines if line.strip()) if "config" not in r]


PROGRESS = ("auto", "on", "off")


class ProgressBar:
    """A one-line bar redrawn in place, for a person watching a terminal (``wanted``)."""

    def __init__(self, stream=None, width=30):
        self.stream = stream or sys.stdout
        self.width = width
        self.shown = False

    @staticmethod
    def wanted(mode="auto", stream=None, environ=None):
        """--progress: 'on', 'off', or 'auto': only where a person watches, decided per launcher.

        Without a launcher, and under MPICH's mpiexec or Slurm's srun, rank 0's stdout is a
        terminal exactly when the user's is (the launchers pass pipes otherwise; `srun --pty`
        passes the terminal). Under Open MPI every rank's stdout is a pseudo-terminal that
        mpirun opens whatever its own output is, so `mpirun ... > log` looks like a terminal
        too: auto draws no bar there (--progress on does).
        """
        if mode != "auto":
            return mode == "on"
        env = os.environ if environ is None else environ
        if any(name.startswith("OMPI_COMM_WORLD_") for name in env):
            return False
        return (stream or sys.stdout).isatty()

    def update(self, epoch, step, n_steps):
        filled = self.width * step // max(n_steps, 1)
        self.stream.write(f"\r  epoch {epoch:5d} [{'#' * filled}{'.' * (self.width - filled)}] {step}/{n_steps}")
        self.stream.flush()
        self.shown = True

    def clear(self):
        if self.shown:
            self.stream.write("\r" + " " * (self.width + 32) + "\r")
            self.stream.flush()
            self.shown = False


class EpochLines:
    """The CLI's epoch lines: ``epoch N/MAX`` and, at the pace of this run so far (evaluation
    included), the time left if training runs to MAX epochs (early stopping may end it sooner)."""

    def __init__(self, max_epochs, clock=time.perf_counter):
        self.max_epochs, self.clock = max_epochs, clock
        self.start = self.first = None

    def __call__(self, r):
        now = self.clock()
        if self.start is None:  # the first record of this run (a resumed run starts past 1)
            self.start, self.first = now - r["seconds"], r["epoch"] - 1
        pace = (now - self.start) / max(1, r["epoch"] - self.first)
        return epoch_line(r, self.max_epochs, pace * max(0, self.max_epochs - r["epoch"]))


def duration(seconds):
    """12s, 3m05s, 2h03m: a time left, to the second below an hour."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def seconds_text(seconds):
    """A duration to 3 significant digits in s, ms or us: 1.23s, 45.6ms, 312us (1234s past 1000 s)."""
    if seconds <= 0:
        return "0s"
    seconds = float(f"{seconds:.3g}")  # rounded first, so 0.9996 ms reads 1ms, not 1000us
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            value = seconds / scale
            return (f"{value:.3g}" if value < 1000 else f"{value:.0f}") + unit
    return f"{seconds / 1e-6:.3g}us"


def epoch_line(r, max_epochs=None, seconds_left=None):
    """The CLI's line for one epoch record (``epoch N/MAX`` and the time left when given)."""
    test = ""
    if "validation_score" in r:  # --early-stopping
        test = f"  val_score {r['validation_score']:.4f}"
    if "test_accuracy" in r:
        test += f"  test_acc {r['test_accuracy']:.4f}"
    elif "test_r2" in r:
        test += f"  test_r2 {r['test_r2']:.4f}"
    rate = r["samples_per_second"]
    parts = ""
    if "compute_seconds" in r:
        parts = (f" (compute {seconds_text(r['compute_seconds'])}, comm {seconds_text(r['comm_seconds'])}, "
                 f"data {seconds_text(r['data_seconds'])})")
    if "shares" in r:  # --balance dynamic or MPINN_SLOW: each rank's share of the rows and busy seconds
        parts += (f"  shares {'/'.join(f'{s:.3f}' for s in r['shares'])}"
                  f"  rank compute {'/'.join(seconds_text(t) for t in r['rank_compute_seconds'])}")
    epoch = f"{r['epoch']:5d}" if max_epochs is None else f"{r['epoch']:{len(str(max_epochs))}d}/{max_epochs}"
    left = "" if seconds_left is None else f"  {duration(seconds_left)} left"
    return (f"epoch {epoch}  loss {r['loss']:.6f}{test}  {seconds_text(r['seconds'])}"
            f"  {rate:,.0f} samples/s{parts}{left}" if rate else f"epoch {epoch}  loss {r['loss']:.6f}{test}{left}")
