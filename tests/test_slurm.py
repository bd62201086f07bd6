"""run/slurm.sbatch and run/search.sbatch under a real Slurm (`make test-slurm` starts a one-node
cluster with tests/slurm/one_node.sh and sets SLURM_CONF; without one these tests skip).

Every job gets a 2-minute limit, so Slurm's own SIGUSR1 (--signal=B:USR1@60) reaches the script
while it trains: checkpoint, exit 75, `scontrol requeue`, and the requeued job resumes. Both
launchers: srun (the script picks the --mpi plugin, as Slurm's MpiDefault=none cannot start the
MPI wheels) and MPIEXEC=mpiexec. The results must equal an uninterrupted run's. Jobs run at once
(the node advertises 8 CPUs); the working folder's name holds a space on purpose.
"""

import csv
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "run"
BIN = Path(sys.executable).parent
DEADLINE = 720  # seconds for every job, requeues included
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL")
# Training slowed by sleeping (MPINN_SLOW: each step sleeps 199x its compute) to ~100 s, longer
# than the 30-60 s Slurm gives a job before its SIGUSR1, with the CPUs left to the others.
TRAIN = ["--test-fraction", "0.2", "--seed", "42", "--hidden", "10", "--solver", "sgd", "--epochs", "1500",
         "--log-every", "250"]
SLOW = "0:200;1:200"
# 36 tasks of ~6 s (slowed the same way, on each group's rank): some finish before the SIGUSR1,
# the others after the requeue.
GRID = 'hidden = [[32], [64]]\nlr = [0.001, 0.003, 0.01]\nalpha = [0.0001, 0.01]\nepochs = 20\nsolver = "sgd"\n'
SEARCH_SLOW = "0:50"
SEARCH = ["--cv", "3"]
MISMATCH = "separate 1-rank jobs"


def slurm_ready():
    if not os.environ.get("SLURM_CONF"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(state in out.stdout for state in ("idle", "mix", "alloc"))


pytestmark = pytest.mark.skipif(not slurm_ready(), reason="no Slurm cluster (make test-slurm starts one)")


def job_env(**extra):
    """This environment without launcher variables (SLURM_CONF kept), the venv's bin first."""
    drop = ("PMI_", "PMIX_", "OMPI_", "PRTE_", "MPI_", "MPIR_", "HYDRA_", "SLURM_", "PBS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) or k == "SLURM_CONF"}
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MPIEXEC", "MPINN_SLOW"):
        env.pop(name, None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def sbatch(folder, script, args, **env):
    folder.mkdir()
    out = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--time=00:02:00", "--output=job.out", str(script),
                          *map(str, args)], cwd=folder, env=job_env(**env), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {"id": out.stdout.strip().split(";")[0], "folder": folder}


def job_fields(job_id):
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def drive(jobs):
    """Wait for every job. Once a job has been requeued, lift its time limit and release it:
    Slurm holds a requeued job ~2 minutes (Reason=BeginTime), and the resumed run needs no
    second interruption to prove the path. Released 5 s ahead, not now: slurmd refuses a launch
    credential issued in the same second as the requeue revoked the old one ("Job credential
    revoked", the job ends FAILED), which a release at once hit in a CI run."""
    start = time.monotonic()
    pending = dict(jobs)
    while pending and time.monotonic() - start < DEADLINE:
        for name, job in list(pending.items()):
            fields = job_fields(job["id"])
            job["state"], job["restarts"] = fields.get("JobState"), int(fields.get("Restarts", 0))
            if job["state"] in DONE:
                job["exit"] = fields.get("ExitCode")
                pending.pop(name)
            elif job["restarts"] >= 1 and not job.get("released"):
                subprocess.run(["scontrol", "update", f"JobId={job['id']}", "TimeLimit=00:15:00"], check=True)
                if fields.get("Reason") == "BeginTime":
                    subprocess.run(["scontrol", "update", f"JobId={job['id']}", "StartTime=now+5"], check=True)
                    job["released"] = True
        time.sleep(2)
    for job in pending.values():
        subprocess.run(["scancel", job["id"]])
    assert not pending, f"jobs still running after {DEADLINE} s: {pending}"
    for job in jobs.values():
        job["log"] = (job["folder"] / "job.out").read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm jobs")
    mpinn, mpiexec = str(BIN / "mpinn"), str(BIN / "mpiexec")
    iris, digits, grid = base / "iris.h5", base / "digits.h5", base / "grid.toml"
    for name, path in (("iris", iris), ("digits", digits)):
        subprocess.run([mpinn, "data", name, str(path)], env=job_env(), check=True, capture_output=True)
    grid.write_text(GRID)
    train = ["--data", iris, *TRAIN]
    search = ["--data", digits, "--grid", grid, *SEARCH]
    jobs = {}
    for launcher in ("srun", "mpiexec"):
        via = {"MPIEXEC": shlex.quote(mpiexec)} if launcher == "mpiexec" else {}
        jobs["train", launcher] = sbatch(base / f"train {launcher}", RUN / "slurm.sbatch", train, MPINN_SLOW=SLOW,
                                         **via)
        jobs["search", launcher] = sbatch(base / f"search {launcher}", RUN / "search.sbatch", search,
                                          MPINN_SLOW=SEARCH_SLOW, **via)
    # Plain srun under MpiDefault=none: N copies of a 1-rank MPI; every copy must stop.
    plain = base / "plain srun"
    plain.mkdir()
    (plain / "job.sh").write_text(f"#!/bin/bash\nsrun {shlex.quote(mpinn)} train --data {shlex.quote(str(iris))} "
                                  "--epochs 5 --checkpoint ck\necho \"srun exit $?\"\n")
    jobs["plain", "train"] = sbatch(plain / "job", plain / "job.sh", [])
    jobs["plain", "script"] = sbatch(base / "plain script", RUN / "slurm.sbatch", train, SRUN_MPI="")
    # The uninterrupted references, meanwhile.
    ref = base / "reference"
    (ref / "search").mkdir(parents=True)
    refs = [subprocess.Popen([mpiexec, "-n", "2", mpinn, *cmd], cwd=ref, env=job_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
            for cmd in (["train", *map(str, train), "--checkpoint", "train", "--quiet"],
                        ["search", *map(str, search), "--results", "search/results.csv", "--checkpoint",
                         "search/tasks"])]
    drive(jobs)
    for proc in refs:
        assert proc.wait(timeout=DEADLINE) == 0, proc.stderr.read()
    return {"jobs": jobs, "ref": ref}


def final_weights(directory):
    latest = (directory / "latest").read_text().strip()
    with h5py.File(directory / latest, "r") as f:
        return [f[f"{kind}/{i}"][...] for kind in ("coefs", "intercepts") for i in range(len(f["coefs"]))]


def requeued_and_resumed(job):
    assert job["state"] == "COMPLETED", job["log"][-3000:]
    assert job["restarts"] >= 1, "Slurm's SIGUSR1 did not interrupt the first run:\n" + job["log"][-3000:]
    assert "(restart 0)" in job["log"] and "(restart 1)" in job["log"]
    assert "requeueing job" in job["log"]


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_slurm_sbatch_time_limit_requeue_resume_equals_uninterrupted(runs, launcher):
    job = runs["jobs"]["train", launcher]
    requeued_and_resumed(job)
    assert "preempted (SIGUSR1)" in job["log"] and "resumed from" in job["log"]
    assert f"launcher {'srun --mpi=pmi2' if launcher == 'srun' else BIN / 'mpiexec'}" in job["log"]
    got = final_weights(job["folder"] / "checkpoints" / job["id"])
    want = final_weights(runs["ref"] / "train")
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def read_results(path):
    with open(path, newline="") as fh:
        return {row["candidate"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_search_sbatch_time_limit_requeue_resume_equals_uninterrupted(runs, launcher):
    job = runs["jobs"]["search", launcher]
    requeued_and_resumed(job)
    assert re.search(r"tasks run: \d+ \(done before: [1-9]\d*\)", job["log"]), job["log"][-3000:]
    got = read_results(job["folder"] / "search" / job["id"] / "results.csv")
    want = read_results(runs["ref"] / "search" / "results.csv")
    assert got.keys() == want.keys()
    for candidate, row in want.items():
        for key, value in row.items():
            if key.endswith("_score"):
                assert abs(float(got[candidate][key]) - float(value)) <= 1e-12, (candidate, key)
            elif not key.endswith("_time"):
                assert got[candidate][key] == value, (candidate, key)


def test_plain_srun_stops_every_copy_before_touching_a_file(runs):
    job = runs["jobs"]["plain", "train"]
    assert job["log"].count(MISMATCH) == 1, job["log"]
    assert "srun --mpi=pmi2" in job["log"] and "srun exit 2" in job["log"]
    assert not (job["folder"] / "ck").exists()


def test_slurm_sbatch_with_plain_srun_fails_with_one_line_and_no_checkpoints(runs):
    job = runs["jobs"]["plain", "script"]
    assert job["state"] == "FAILED" and job["exit"].startswith("2"), job
    assert job["log"].count(MISMATCH) == 1, job["log"]
    assert not (job["folder"] / "checkpoints").exists()
