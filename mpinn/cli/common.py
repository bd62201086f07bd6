"""What the commands share: exit codes, the launcher's rank before MPI starts, rank-0 output,
the argument parser that exits 2, output-file checks and report printing."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mpinn.errors import InputError

EXIT_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # as parallel/faults.py; resumable: run again with --resume
EXIT_INTERRUPTED = 130  # as parallel/faults.py: SIGINT (Ctrl-C); `train` checkpoints first, resumable too
_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MPI_LOCALRANKID", "SLURM_PROCID")
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _env_int(names, default):
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return default


def launched_size():
    """The number of ranks as the launcher set it, known before MPI is initialised."""
    return _env_int(_SIZE_VARS, 1)


def env_rank():
    """This process's rank as the launcher set it, known before MPI is initialised."""
    return _env_int(_RANK_VARS, 0)


def limit_blas_threads():
    """One BLAS thread per rank under a launcher, unless the user chose a count.

    N ranks each running N BLAS threads oversubscribe the cores; set OMP_NUM_THREADS (e.g.
    to cpus-per-task) to run hybrid MPI x threads on purpose. Must run before numpy loads.
    """
    if _env_int(_SIZE_VARS, 1) > 1 and not any(v in os.environ for v in _THREAD_VARS):
        for name in _THREAD_VARS:
            os.environ[name] = "1"


def say(*args, file=None, end="\n"):
    """Print on rank 0 only (after a rank was lost, the survivors' rank 0)."""
    from mpinn.parallel.comm import world_rank_if_started

    rank = world_rank_if_started()
    if (env_rank() if rank is None else rank) == 0:
        print(*args, file=file or sys.stdout, end=end, flush=True)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        say(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)


def print_report(report, as_json):
    """One JSON object (full precision), or one `key: value` line per entry (lists and dicts as
    JSON), floats shortened for reading."""
    if as_json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        if isinstance(value, float):  # as the training summary prints its test metrics
            text = f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4g}"
        else:
            text = json.dumps(_short(value)) if isinstance(value, (dict, list)) else value
        print(f"{key}: {text}")


def _short(value):
    """Floats to 4 decimals (4 significant digits below 0.001), inside lists and dicts too."""
    if isinstance(value, float):
        return round(value, 4) if value == 0 or abs(value) >= 1e-3 else float(f"{value:.4g}")
    if isinstance(value, (list, tuple)):
        return [_short(v) for v in value]
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    return value


def problem_for_model(fitted, path, x_name, y_name, comm, with_y=True):
    """This rank's shard of a file, checked against a fitted model; the file's columns taken by
    name when both name them (data/columns.py: reordered, categories matched)."""
    import h5py
    import numpy as np

    from mpinn.data import hdf5 as datamod
    from mpinn.data.columns import plan_columns
    from mpinn.data.partition import make_shard
    from mpinn.parallel.agree import on_root
    from mpinn.train.problem import Problem, take_columns

    info = datamod.DataInfo(**on_root(
        comm, lambda: datamod.inspect(path, x_name, y_name, require_y=with_y).to_json()))
    plan = plan_columns(fitted.feature_names, fitted.encoding, info.feature_names, info.encoding, path)
    if plan is None and info.n_features != fitted.n_features_in_:
        raise InputError(f"{path}: {info.n_features} features but the model expects {fitted.n_features_in_}")
    shard = make_shard(info.n_rows, comm.rank, comm.size, "block")
    with h5py.File(path, "r") as f:
        X, y = datamod.read_shard(f, info, shard, fitted.coefs_[0].dtype, with_y=with_y)
    if plan is not None:
        X = take_columns(comm, plan, X, info.feature_names, path, shard)
    classes = None if fitted.classes_ is None else np.asarray(fitted.classes_)
    return Problem(task=fitted.task, X=X, y=y, shard=shard, train_rows=np.zeros(0, np.int64),
                   n_features=fitted.n_features_in_, classes=classes, class_names=fitted.class_names), info


def load_on_all(comm, path):
    """(fitted model, checkpoint attributes) on every rank; rank 0 alone reads the file
    (train/checkpoint.load_model_once)."""
    from mpinn.train.checkpoint import load_model_once

    return load_model_once(comm, path)
