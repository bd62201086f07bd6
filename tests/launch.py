"""Launch `mpinn` the way users do (`mpiexec -n N mpinn ...`), always under a timeout."""

import os
import pty
import shlex
import shutil
import subprocess
import sys
import time

import pytest

TIMEOUT = 180
BIN = os.path.dirname(sys.executable)
MPINN = os.path.join(BIN, "mpinn")


def mpiexec():
    launcher = shlex.split(os.environ.get("MPINN_MPIEXEC") or os.path.join(BIN, "mpiexec"))
    found = shutil.which(launcher[0])
    if not found:
        pytest.fail(f"no MPI launcher {launcher[0]!r}: set MPINN_MPIEXEC or install the mpich extra")
    return [os.path.abspath(found), *launcher[1:]]


def clean_env(**extra):
    # A launch from inside an MPI job must not inherit its process-manager variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_", "HYDRA_"))}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env.pop("MPINN_FAULT", None)
    env.pop("MPINN_SLOW", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def command(args, np_=1):
    return ([*mpiexec(), "-n", str(np_)] if np_ > 1 else []) + [MPINN, *map(str, args)]


def run(args, np_=1, cwd=None, check=True, timeout=TIMEOUT, env=None):
    """Run to completion; the CompletedProcess gets an ``elapsed`` attribute (seconds)."""
    cmd = command(args, np_)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or clean_env(), cwd=cwd)
    proc.elapsed = time.monotonic() - start
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def on_terminal(args, env=None, timeout=120):
    """Run `mpinn ARGS` with stdout and stderr on a pseudo-terminal; returns everything written."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([MPINN, *map(str, args)], stdout=slave, stderr=slave, env=env or clean_env())
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=timeout)
    os.close(master)
    return out.decode()
