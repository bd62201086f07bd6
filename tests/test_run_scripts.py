"""The launch scripts in run/: syntax, and end-to-end runs with the scheduler's variables faked.

Serial tests: each script starts its own `mpiexec -n 2` (MPINN_MPIEXEC from the Makefile, else
the mpiexec on PATH), each under a timeout, with the parent's MPI/PMI variables removed so a
script never joins the job of a parent launched under mpiexec.
"""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "run"
SCRIPTS = ["local.sh", "slurm.sbatch", "pbs.sh"]
TIMEOUT = 300
BIN = Path(sys.executable).parent


def mpiexec():
    launcher = os.environ.get("MPINN_MPIEXEC", "").strip()
    if launcher:
        return launcher
    found = shutil.which("mpiexec", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip("no mpiexec found (set MPINN_MPIEXEC)")
    return shlex.quote(found)


def clean_env(**extra):
    """The parent environment without launcher/scheduler variables; the venv's bin first."""
    drop = ("PMI_", "PMIX_", "OMPI_", "PRTE_", "MPI_", "MPIR_", "HYDRA_", "SLURM_", "PBS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MPIEXEC", "TIMEOUT"):
        env.pop(name, None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd, env, cwd):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "iris.h5"
    run([str(BIN / "mpinn"), "data", "iris", str(path)], clean_env(), path.parent)
    return path


def load_latest(directory):
    import mpinn

    model = mpinn.load(str(directory))
    assert model.coefs_[0].shape[0] == 4 and list(model.classes_) == ["setosa", "versicolor", "virginica"]
    return model


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_parse_and_are_strict(name):
    path = RUN / name
    assert os.access(path, os.X_OK), f"{path} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=60)
    assert "set -euo pipefail" in path.read_text()


def test_local_sh_trains_on_two_ranks(tmp_path, iris):
    ckpt = tmp_path / "ckpt"
    proc = run([str(RUN / "local.sh"), "2", "--data", str(iris), "--hidden", "10", "--epochs", "20",
                "--checkpoint", str(ckpt)],
               clean_env(MPIEXEC=mpiexec(), TIMEOUT=TIMEOUT - 20), tmp_path)
    assert "2 rank(s)" in proc.stdout and "done: 20 epochs" in proc.stdout
    # Pinned to cores unless that would oversubscribe them.
    assert f"binding {'core' if os.cpu_count() >= 2 else 'none'}" in proc.stdout
    assert (ckpt / "latest").exists()
    load_latest(ckpt)


@pytest.mark.parametrize("script", ["local.sh", "slurm.sbatch", "pbs.sh"])
def test_a_launcher_and_data_whose_paths_hold_spaces(tmp_path, iris, script):
    """MPIEXEC is split as shell words, quotes honoured (the Makefile quotes a venv path with a space)."""
    folder = tmp_path / "a folder"
    folder.mkdir()
    real = Path(shutil.which(shlex.split(mpiexec())[0]))
    (folder / "bin dir").symlink_to(real.parent, target_is_directory=True)  # Hydra finds its proxy beside it
    launcher = folder / "bin dir" / real.name
    data = folder / "iris data.h5"
    shutil.copy(iris, data)
    args = ["--data", str(data), "--hidden", "10", "--epochs", "5"]
    env = clean_env(MPIEXEC=f"{shlex.quote(str(launcher))} {' '.join(shlex.split(mpiexec())[1:])}",
                    SLURM_NTASKS=2, SLURM_SUBMIT_DIR=folder, SLURM_JOB_ID=5, PBS_O_WORKDIR=folder, PBS_JOBID=5,
                    MPINN_ARGS=shlex.join(args))
    nodefile = folder / "node file"
    nodefile.write_text("localhost\nlocalhost\n")
    env["PBS_NODEFILE"] = str(nodefile)
    cmd = {"local.sh": [str(RUN / script), "2", *args, "--checkpoint", str(folder / "checkpoints" / "5")],
           "slurm.sbatch": [str(RUN / script), *args], "pbs.sh": [str(RUN / script)]}[script]
    proc = run(cmd, env, folder)
    assert "done: 5 epochs" in proc.stdout, proc.stdout + proc.stderr
    load_latest(folder / "checkpoints" / "5")


def test_local_sh_rejects_a_bad_rank_count(tmp_path):
    proc = subprocess.run([str(RUN / "local.sh"), "two"], env=clean_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_elastic_needs_open_mpis_mpirun(tmp_path, iris):
    """ELASTIC=1 adds --with-ft ulfm, which only Open MPI's mpirun knows (tests/test_elastic.py runs it there)."""
    if "Open MPI" in subprocess.run([shlex.split(mpiexec())[0], "--version"], capture_output=True, text=True).stdout:
        pytest.skip("this launcher is Open MPI's")
    local = subprocess.run([str(RUN / "local.sh"), "2", "--data", str(iris)], env=clean_env(MPIEXEC=mpiexec(), ELASTIC=1),
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert local.returncode == 2 and local.stderr.count("\n") == 1 and "ELASTIC=1 needs Open MPI" in local.stderr
    batch = subprocess.run([str(RUN / "slurm.sbatch"), "--data", str(iris)],
                           env=clean_env(ELASTIC=1, SLURM_NTASKS=2, SLURM_SUBMIT_DIR=tmp_path, SLURM_JOB_ID=7),
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert batch.returncode == 2 and "ELASTIC=1 needs MPIEXEC=mpirun" in batch.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_slurm_sbatch_with_faked_job(tmp_path, iris):
    env = clean_env(SLURM_NTASKS=2, SLURM_CPUS_PER_TASK=1, SLURM_SUBMIT_DIR=tmp_path,
                    SLURM_JOB_ID=12345, MPIEXEC=mpiexec())
    proc = run([str(RUN / "slurm.sbatch"), "--data", str(iris), "--hidden", "10", "--epochs", "20"],
               env, tmp_path)
    assert "ranks: 2" in proc.stdout and "blas_threads: 1" in proc.stdout
    ckpt = tmp_path / "checkpoints" / "12345"
    assert sorted(p.name for p in ckpt.glob("ckpt-*.h5")), proc.stdout  # every 10 epochs and at the end
    load_latest(ckpt)


def test_slurm_sbatch_usr1_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path, iris):
    # A stand-in for scontrol that records what the script asked of Slurm.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bindir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\n')
    (bindir / "scontrol").chmod(0o755)
    env = clean_env(SLURM_NTASKS=2, SLURM_CPUS_PER_TASK=1, SLURM_SUBMIT_DIR=tmp_path,
                    SLURM_JOB_ID=7, MPIEXEC=mpiexec(), CHECKPOINT_EVERY=200)
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    cmd = [str(RUN / "slurm.sbatch"), "--data", str(iris), "--hidden", "10", "--epochs", "4000",
           "--tol", "0", "--quiet"]
    ckpt = tmp_path / "checkpoints" / "7"
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (ckpt / "latest").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before the signal could be sent"
        proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@60 does
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "preempted (SIGUSR1)" in err and "requeueing job 7" in err, err
    assert calls.read_text().split() == ["requeue", "7"]
    stopped_at = mpinn_load_epoch(ckpt)
    assert 0 < stopped_at < 4000

    # Slurm starts the requeued job with the same id: it resumes from the checkpoint.
    env["SLURM_RESTART_COUNT"] = "1"
    proc = run(cmd, env, tmp_path)
    assert f"resumed from {ckpt}" in proc.stdout and "done: 4000 epochs" in proc.stdout
    assert calls.read_text().split() == ["requeue", "7"]  # no second requeue
    assert mpinn_load_epoch(ckpt) == 4000


def mpinn_load_epoch(directory):
    import mpinn

    return len(mpinn.load(str(directory)).loss_curve_)


def test_pbs_sh_with_faked_job(tmp_path, iris):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("localhost\nlocalhost\n")
    env = clean_env(PBS_NODEFILE=nodefile, PBS_O_WORKDIR=tmp_path, PBS_JOBID="99.server",
                    MPIEXEC=mpiexec(), MPINN_ARGS=f"--data {iris} --hidden 10 --epochs 20")
    proc = run([str(RUN / "pbs.sh")], env, tmp_path)
    assert "ranks: 2" in proc.stdout and "done: 20 epochs" in proc.stdout
    ckpt = tmp_path / "checkpoints" / "99.server"
    load_latest(ckpt)
    # A new job pointed at the same checkpoint directory continues (training args via "$@").
    env.update(PBS_JOBID="100.server", CHECKPOINT_DIR=str(ckpt))
    proc = run([str(RUN / "pbs.sh"), "--data", str(iris), "--hidden", "10", "--epochs", "30"], env, tmp_path)
    assert f"resumed from {ckpt}" in proc.stdout and "done: 30 epochs" in proc.stdout
