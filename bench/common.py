"""Shared helpers of the benchmark workers: environment, JSON hand-off, peak RSS.

Each worker runs in its own process (often under mpiexec) and prints one line
``BENCH_JSON {...}`` that bench/run.py parses, so no timing happens in the orchestrating
process and every peak RSS is that of a fresh process.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "BENCH_JSON "
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def bench_env(threads=1, keep_coretype=False, extra=None):
    """The environment of every benchmark process: ``threads`` BLAS threads, mpinn importable.

    OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set on some machines of this workplace to force an
    older kernel for old OpenBLAS builds; they slow a current numpy, so they are dropped here
    (for the benchmark processes only) unless ``keep_coretype``.
    """
    env = dict(os.environ)
    for name in THREAD_VARS:
        env[name] = str(threads)
    if not keep_coretype:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else str(ROOT)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")  # Open MPI refuses root without these
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    if extra:
        env.update(extra)
    return env


def emit(obj):
    print(TAG + json.dumps(obj), flush=True)


def parse(stdout):
    """The last BENCH_JSON object printed, or None."""
    found = None
    for line in stdout.splitlines():
        if line.startswith(TAG):
            found = json.loads(line[len(TAG):])
    return found


def peak_rss_bytes():
    """Peak resident set size of this process so far (Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * (1 if sys.platform == "darwin" else 1024)


def current_rss_bytes():
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def pss_bytes():
    """Proportional set size now: pages shared by k processes count 1/k each (so a node's one
    shared parameter copy counts once over its ranks); None where /proc does not say."""
    try:
        with open("/proc/self/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def blas_info():
    try:
        from threadpoolctl import threadpool_info

        return [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        return []
