"""Rank 0's outputs during training: the metrics file (JSONL or CSV) and a terminal progress bar."""

from __future__ import annotations

import csv
import json
import os
import sys


class MetricsWriter:
    """One record per epoch: JSON lines, or CSV when the file name ends in .csv.

    A resumed run appends to the file of the run it continues. CSV columns are fixed by the
    first record written (or the existing header); later keys outside them are dropped.
    """

    def __init__(self, path, append=False):
        self.path = path
        self.csv = path.lower().endswith(".csv")
        self.columns = None
        if self.csv and append and os.path.exists(path):
            with open(path, newline="") as fh:
                self.columns = next(csv.reader(fh), None)
        self.fh = open(path, "a" if append else "w", newline="" if self.csv else None)

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


class ProgressBar:
    """A one-line bar redrawn in place; only ever shown when stdout is a terminal."""

    def __init__(self, stream=None, width=30):
        self.stream = stream or sys.stdout
        self.width = width
        self.shown = False

    @staticmethod
    def wanted(stream=None):
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


def epoch_line(r):
    """The CLI's line for one epoch record."""
    test = ""
    if "test_accuracy" in r:
        test = f"  test_acc {r['test_accuracy']:.4f}"
    elif "test_r2" in r:
        test = f"  test_r2 {r['test_r2']:.4f}"
    rate = r["samples_per_second"]
    parts = ""
    if "compute_seconds" in r:
        parts = f" (compute {r['compute_seconds']:.3f}s, comm {r['comm_seconds']:.3f}s, data {r['data_seconds']:.3f}s)"
    return (f"epoch {r['epoch']:5d}  loss {r['loss']:.6f}{test}  {r['seconds']:.3f}s"
            f"  {rate:,.0f} samples/s{parts}" if rate else f"epoch {r['epoch']:5d}  loss {r['loss']:.6f}{test}")
