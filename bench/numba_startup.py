"""Start-up of the compiled update when many processes of one machine start at once
(docs/performance.md, "The compiled update").

    python bench/numba_startup.py [--processes 4] [--repeat 2]

Starts --processes Python processes with the same empty numba cache (NUMBA_CACHE_DIR in a
temporary directory, also their TMPDIR, where mpinn's lock lives); once all have imported numpy,
numba and mpinn they leave a start barrier together, as the ranks of a job leave MPI_Init, and
each makes its first call of the 6 kernels (gd, sgd, adam x float32, float64) through
mpinn.nn.fused. Prints, per run, the seconds from the barrier until the last process is done,
the CPU seconds over all processes (imports included), and how many kernels each process
compiled and loaded from the cache (numba's own counters), then the same with the cache written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_env  # noqa: E402

FIRST_CALLS = """
import json, os, resource, time
import numba, numpy as np
from mpinn.nn import fused
# Start together, as the ranks of a job leave MPI_Init together: each announces itself and waits
# for the others (numba is imported by then, so only the first calls are left).
ready = os.path.join(os.environ["TMPDIR"], "ready")
os.makedirs(ready, exist_ok=True)
open(os.path.join(ready, str(os.getpid())), "w").close()
while len(os.listdir(ready)) < int(os.environ["BENCH_PROCESSES"]):
    time.sleep(0.01)
start = time.perf_counter()
kernels = fused.available()
for dt, ks in kernels.items():  # each kernel's first call with the optimizers' argument types
    d, a = dt.type, [np.zeros(4, dt) for _ in range(4)]
    ks["gd"](a[0], a[1], True, d(0), True, d(1), d(0))
    ks["sgd"](a[0], a[1], a[2], True, d(0), True, d(1), d(0), d(0), False)
    ks["adam"](a[0], a[1], a[2], a[3], True, d(0), True, d(1), d(.9), d(.999), d(.1), d(.001), d(1e-8), np.float64(0))
stats = [k.stats for ks in kernels.values() for k in ks.values()]
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"mpinn": fused.__file__, "seconds": time.perf_counter() - start, "cpu": ru.ru_utime + ru.ru_stime, "compiled": sum(sum(s.cache_misses.values()) for s in stats),
                  "loaded": sum(sum(s.cache_hits.values()) for s in stats)}))
"""


def run(processes, cache, lock):
    env = bench_env(extra={"NUMBA_CACHE_DIR": cache, "TMPDIR": lock, "MPINN_NUMBA": "1",
                           "BENCH_PROCESSES": str(processes)})
    shutil.rmtree(os.path.join(lock, "ready"), ignore_errors=True)
    # cwd: `python -c` puts the current directory first on sys.path, before PYTHONPATH's mpinn.
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_CALLS], env=env, stdout=subprocess.PIPE, text=True, cwd=lock)
             for _ in range(processes)]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=1800)
        if p.returncode != 0:
            sys.exit(f"a process failed ({p.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return max(r["seconds"] for r in results), results


def fused_file(args):
    out = subprocess.run([sys.executable, "-c", "from mpinn.nn import fused; print(fused.__file__)"], env=bench_env(),
                         capture_output=True, text=True, cwd=tempfile.gettempdir(), check=True)
    return out.stdout.strip()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    try:
        import numba  # noqa: F401
    except ImportError:
        sys.exit("numba is not installed (pip install 'mpinn[fast]')")
    print(f"{args.processes} processes started together, each making its first call of the 6 kernels "
          f"({Path(fused_file(args)).parent.parent.parent})")
    print("| run | cache | seconds after the barrier | CPU s, all processes | compiled, per process | loaded, per process |")
    print("|---|---|---|---|---|---|")
    for run_index in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="numba-startup-") as tmp:
            cache, lock = os.path.join(tmp, "cache"), os.path.join(tmp, "lock")
            os.makedirs(lock)
            for state in ("empty", "written"):
                wall, results = run(args.processes, cache, lock)
                print(f"| {run_index} | {state} | {wall:.2f} | {sum(r['cpu'] for r in results):.2f} | "
                      f"{', '.join(str(r['compiled']) for r in results)} | "
                      f"{', '.join(str(r['loaded']) for r in results)} |", flush=True)


if __name__ == "__main__":
    main()
