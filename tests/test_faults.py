"""Real faults under mpiexec: a failing or vanished rank ends the whole job quickly, a
preempted job checkpoints and resumes, and no kill ever leaves an unloadable checkpoint.

Faults are injected with MPINN_FAULT=RANK:STEP:KIND (mpinn/parallel/faults.py). Every launch has a
timeout, so a hang fails the test.
"""

import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest

import mpinn
from launch import TIMEOUT, clean_env, command, run
from mpinn.train.checkpoint import read_checkpoint

# A run far longer than any test: only a fault can end it early.
ENDLESS = ["--hidden", "8", "--solver", "adam", "--epochs", "1000000", "--batch-size", "8", "--seed", "3",
           "--quiet", "--checkpoint-every", "1"]
SHORT = ["--hidden", "8", "--solver", "sgd", "--epochs", "12", "--batch-size", "16", "--seed", "3", "--quiet"]
FAULT_DEADLINE = 10  # seconds from the fault to every rank gone


def _assert_loads(directory):
    attrs, _ = read_checkpoint(directory)  # verifies the checksum
    model = mpinn.load(directory)
    assert all(np.isfinite(c).all() for c in model.coefs_)
    return attrs


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("kind", ["raise", "kill", "exit"])
def test_a_failing_rank_ends_every_rank(iris, tmp_path, n, kind):
    # The fault hits the last rank at step 60 (epoch 4 of 19 steps): checkpoints exist by then.
    proc = run(["train", "--data", iris, "--checkpoint", tmp_path / "ck", *ENDLESS], np_=n, check=False,
               timeout=60, env=clean_env(MPINN_FAULT=f"{n - 1}:60:{kind}"))
    assert proc.returncode != 0
    assert proc.elapsed < FAULT_DEADLINE + 5, f"took {proc.elapsed:.1f}s"
    if kind == "raise":
        lines = [line for line in proc.stderr.splitlines() if line.startswith("mpinn:")]
        assert lines == [f"mpinn: rank {n - 1}: RuntimeError: injected fault at step 60"], proc.stderr
        assert "Traceback" not in proc.stderr
    _assert_loads(tmp_path / "ck")


@pytest.mark.parametrize("n", [2, 3])
def test_divergence_stops_all_ranks_and_keeps_last_good_checkpoint(iris, tmp_path, n):
    proc = run(["train", "--data", iris, "--checkpoint", tmp_path / "ck", *ENDLESS], np_=n, check=False,
               timeout=60, env=clean_env(MPINN_FAULT="1:60:nan"))
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "mpinn: error: training diverged: loss is nan at epoch 4; try a smaller --lr"]
    attrs = _assert_loads(tmp_path / "ck")
    assert attrs["state"]["epoch"] == 3


def test_overflowing_learning_rate_gives_one_message_not_numpy_warnings(iris, tmp_path):
    proc = run(["train", "--data", iris, "--task", "regress", "--activation", "identity", "--solver", "sgd",
                "--lr", "1e6", "--hidden", "10", "--epochs", "50", "--quiet", "--checkpoint", tmp_path / "ck"],
               np_=2, check=False, timeout=60)
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "mpinn: error: training diverged: loss is inf at epoch 4; try a smaller --lr"], proc.stderr


@pytest.mark.parametrize("n,resume_n", [(2, 2), (3, 3), (2, 3), (3, 1)])
@pytest.mark.parametrize("kind", ["term", "usr1"])
def test_preemption_checkpoints_then_resume_matches_uninterrupted(iris, tmp_path, n, resume_n, kind):
    ref = tmp_path / "ref"
    run(["train", "--data", iris, "--checkpoint", ref, *SHORT], np_=n)
    ck = tmp_path / "ck"
    # Signal one rank mid-epoch (step 23 = epoch 3, step 3 of 10): all ranks stop after that step.
    proc = run(["train", "--data", iris, "--checkpoint", ck, *SHORT], np_=n, check=False,
               env=clean_env(MPINN_FAULT=f"{n - 1}:23:{kind}"))
    assert proc.returncode == 75, proc.stderr
    assert "preempted" in proc.stderr
    attrs = _assert_loads(ck)
    assert (attrs["state"]["epoch"], attrs["state"]["step_in_epoch"]) == (2, 3)
    run(["train", "--data", iris, "--checkpoint", ck, "--resume", *SHORT], np_=resume_n)
    a, b = mpinn.load(ref), mpinn.load(ck)
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        if resume_n == n:
            np.testing.assert_array_equal(x, y)  # same rank count: bit for bit
        else:
            assert np.max(np.abs(x - y)) <= 1e-10 * np.max(np.abs(x))
    assert len(b.loss_curve_) == 12


def test_signal_to_the_launcher_preempts_the_job(iris, tmp_path):
    """Slurm signals the job step; here SIGUSR1 goes to mpiexec, which forwards it to every rank."""
    ck = tmp_path / "ck"
    proc = subprocess.Popen(command(["train", "--data", iris, "--checkpoint", ck, *ENDLESS], 2),
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (ck / "latest").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=FAULT_DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == 75, err
    _assert_loads(ck)


def _latest_epoch(directory):
    """The epoch of the checkpoint `latest` names (replaced atomically), 0 before the first."""
    try:
        name = (directory / "latest").read_text().strip()
    except FileNotFoundError:
        return 0
    return int(name.split("-")[1])


def _kill_group(proc):
    """SIGKILL the launcher and its ranks (a session of their own), and reap the launcher."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _wait_for_epoch(proc, directory, epoch, timeout=TIMEOUT):
    """Wait until the running job has checkpointed ``epoch``; the time it did, or None if
    the job ended first."""
    deadline = time.monotonic() + timeout
    while _latest_epoch(directory) < epoch:
        if proc.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.002)
    return time.monotonic()


@pytest.mark.long
def test_kill_at_random_moments_never_loses_the_checkpoint(tmp_path):
    """20 runs SIGKILLed at random moments of training; each time the latest checkpoint loads
    and resuming finishes with the weights of an uninterrupted run. Each kill is aimed at a
    random moment after a random epoch's checkpoint (up to an epoch and a half later, so kills
    also land while a checkpoint is written), and the test checks that it landed there: while
    the job was still running and before its last epoch."""
    data = tmp_path / "syn.h5"
    run(["data", "synthetic", data, "--samples", "8000", "--features", "20", "--classes", "3"])
    epochs = 20
    args = ["--data", data, "--hidden", "64,64", "--solver", "adam", "--epochs", str(epochs), "--batch-size", "32",
            "--seed", "1", "--n-iter-no-change", "1000", "--quiet", "--checkpoint-every", "1",
            "--keep-checkpoints", "2"]
    ref = tmp_path / "ref"
    run(["train", "--checkpoint", ref, *args], np_=2)
    want = mpinn.load(ref)
    rng = random.Random(0)
    landed = []
    for i in range(20):
        ck = tmp_path / f"ck{i}"
        proc = subprocess.Popen(command(["train", "--checkpoint", ck, *args], 2),
                                env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        after = rng.randint(1, epochs - 6)
        try:
            # This run's own epoch time (the machine's speed may change between runs), then a
            # kill at a random moment of the next epoch and a half.
            seen = [_wait_for_epoch(proc, ck, e) for e in (after, after + 1)]
            assert None not in seen, "the job ended before the kill"
            time.sleep(rng.uniform(0, 1.5 * (seen[1] - seen[0])))
            running = proc.poll() is None
        finally:
            _kill_group(proc)
        attrs = _assert_loads(ck)
        # The kill landed mid-run: the job was running, its last checkpoint is not the final one.
        assert running, f"run {i}: the job had ended before the kill"
        assert after + 1 <= attrs["state"]["epoch"] < epochs and attrs["state"]["finished"] is None, attrs["state"]
        landed.append(attrs["state"]["epoch"])
        run(["train", "--checkpoint", ck, "--resume", *args], np_=2)
        got = mpinn.load(ck)
        for x, y in zip(want.coefs_ + want.intercepts_, got.coefs_ + got.intercepts_):
            np.testing.assert_array_equal(x, y)
        assert len([n for n in os.listdir(ck) if n.endswith(".h5")]) <= 2
    assert len(set(landed)) >= 8, landed  # spread over the run, not bunched at one moment


def test_user_script_exception_ends_every_rank(tmp_path):
    """A user script calling mpinn.abort_on_exception(): rank 1 raises while rank 0 waits."""
    script = tmp_path / "job.py"
    script.write_text(
        "import mpinn\n"
        "mpinn.abort_on_exception()\n"
        "from mpi4py import MPI\n"
        "if MPI.COMM_WORLD.Get_rank() == 1:\n"
        "    raise ValueError('bad things on rank 1')\n"
        "MPI.COMM_WORLD.Barrier()  # rank 0 would wait here forever without the hook\n")
    import sys

    from launch import mpiexec

    start = time.monotonic()
    proc = subprocess.run([*mpiexec(), "-n", "2", sys.executable, str(script)], capture_output=True,
                          text=True, timeout=60, env=clean_env())
    assert proc.returncode != 0
    assert time.monotonic() - start < FAULT_DEADLINE + 5
    assert "mpinn: rank 1: ValueError: bad things on rank 1" in proc.stderr
