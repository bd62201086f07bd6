"""Signals: Ctrl-C to `mpiexec ... mpinn train`, and SIGTERM / SIGINT in the estimators' fit.

The CLI turns SIGINT into what SIGTERM already does (every rank stops at one step, checkpoint,
one line, exit 130 instead of 75). An estimator's fit watches the signals for its whole run,
data loading included, and starts every fit with a clear flag (mpinn/parallel/faults.py).
"""

import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import mpinn
from launch import clean_env, command, run
from mpinn.train.checkpoint import read_checkpoint
from mpinn.data.builtin import load_iris

ENDLESS = ["--hidden", "8", "--epochs", "1000000", "--batch-size", "8", "--seed", "3", "--quiet",
           "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def iris_xy():
    return load_iris()[:2]


class _Unhandled(Exception):
    pass


@pytest.fixture
def fallback_handlers():
    """The test's own SIGTERM and SIGINT handlers, which a fit must replace while it runs and
    put back after; reaching one means the fit did not handle the signal."""

    def unhandled(signum, frame):
        raise _Unhandled(f"{signal.Signals(signum).name} reached the test's handler: the fit ignored it")

    previous = {sig: signal.signal(sig, unhandled) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield unhandled
    for sig, handler in previous.items():
        signal.signal(sig, handler)


class _SignalAtLine:
    """stdout for a verbose fit: sends ``sig`` to this process once ``text`` is printed, i.e.
    at a known epoch of a running fit (the next step sees it)."""

    def __init__(self, sig, text):
        self.sig, self.text, self.sent, self.lines = sig, text, False, []

    def write(self, s):
        self.lines.append(s)
        if not self.sent and self.text in s:
            self.sent = True
            os.kill(os.getpid(), self.sig)
        return len(s)

    def flush(self):
        pass


class _SignalWhenRead:
    """Array-like X that signals this process while fit converts it: a signal during loading."""

    def __init__(self, X, sig):
        self.X, self.sig = X, sig

    def __array__(self, dtype=None, copy=None):
        os.kill(os.getpid(), self.sig)
        return np.asarray(self.X, dtype=dtype)


def _estimator(**kw):
    return mpinn.MLPClassifier(hidden_layer_sizes=(8,), solver="adam", batch_size=50, max_iter=8, random_state=0,
                               **kw)


def _quiet_fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
        return est.fit(X, y)


# ---- the estimators ----------------------------------------------------------------------------


def test_a_signal_to_one_fit_does_not_stop_the_next(iris_xy, fallback_handlers):
    """The flag is reset when a fit starts: before, a signal left it set for good and every
    later fit in the process stopped at its first step."""
    X, y = iris_xy
    reference = _quiet_fit(_estimator(), X, y)
    from mpinn.parallel.faults import Preemption

    Preemption.install((signal.SIGTERM,))
    os.kill(os.getpid(), signal.SIGTERM)  # handled: sets the flag, as during some earlier fit
    signal.signal(signal.SIGTERM, fallback_handlers)
    signal.signal(signal.SIGINT, fallback_handlers)
    assert Preemption.requested
    again = _quiet_fit(_estimator(), X, y)
    assert again.n_iter_ == reference.n_iter_ == 8
    for a, b in zip(again.coefs_, reference.coefs_):
        np.testing.assert_array_equal(a, b)


def test_sigterm_during_fit_raises_preempted_after_the_checkpoint(iris_xy, tmp_path, fallback_handlers,
                                                                  monkeypatch):
    X, y = iris_xy
    stdout = _SignalAtLine(signal.SIGTERM, "Iteration 3,")
    monkeypatch.setattr(sys, "stdout", stdout)
    est = _estimator(verbose=True, checkpoint=tmp_path / "ck")
    with pytest.raises(mpinn.Preempted, match=r"MLPClassifier.fit preempted \(SIGTERM\) at epoch 3 step 1; "
                                              r"checkpoint written"):
        est.fit(X, y)
    assert stdout.sent
    assert est.n_iter_ == 0 and est.loss_curve_ == []  # a fit that raised records no training
    attrs, _ = read_checkpoint(tmp_path / "ck")
    assert (attrs["state"]["epoch"], attrs["state"]["step_in_epoch"]) == (3, 1)
    assert mpinn.Preempted.exit_code == 75
    assert signal.getsignal(signal.SIGTERM) is fallback_handlers  # the caller's handler is back


def test_sigint_during_fit_keeps_the_model_so_far_as_sklearn(iris_xy, fallback_handlers, monkeypatch):
    X, y = iris_xy
    monkeypatch.setattr(sys, "stdout", _SignalAtLine(signal.SIGINT, "Iteration 3,"))
    est = _estimator(verbose=True)
    with pytest.warns(UserWarning, match="Training interrupted by user."):
        est.fit(X, y)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3
    assert est.predict(X).shape == y.shape
    assert signal.getsignal(signal.SIGINT) is fallback_handlers


def test_signal_while_the_data_loads_stops_before_the_first_step(iris_xy, tmp_path, fallback_handlers):
    X, y = iris_xy
    est = _estimator(checkpoint=tmp_path / "ck")
    with pytest.raises(mpinn.Preempted, match=r"preempted \(SIGTERM\) before the first step; nothing saved"):
        est.fit(_SignalWhenRead(X, signal.SIGTERM), y)
    assert not (tmp_path / "ck" / "latest").exists()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C before training: as scikit-learn, it propagates
        est.fit(_SignalWhenRead(X, signal.SIGINT), y)


@pytest.mark.mpi(min_size=2)
def test_sigterm_on_one_rank_raises_preempted_on_every_rank(world, iris_xy, tmp_path_factory, monkeypatch):
    X, y = iris_xy
    rank, size = world.Get_rank(), world.Get_size()
    directory = world.bcast(str(tmp_path_factory.mktemp("ck")) if rank == 0 else None, root=0)
    monkeypatch.setenv("MPINN_FAULT", f"{size - 1}:5:term")  # the last rank, at global step 5
    with pytest.raises(mpinn.Preempted) as info:
        _estimator(checkpoint=directory).fit(X, y)
    messages = world.allgather(str(info.value))
    assert len(set(messages)) == 1 and "at epoch 1 step 2" in messages[0], messages
    world.Barrier()
    attrs, _ = read_checkpoint(directory)
    assert attrs["state"]["global_step"] == 5


# ---- the command line ----------------------------------------------------------------------------


def test_ctrl_c_to_mpiexec_checkpoints_with_one_line_and_exit_130(iris, tmp_path):
    """Ctrl-C at a terminal sends SIGINT to the foreground process group: here mpiexec's."""
    ck = tmp_path / "ck"
    proc = subprocess.Popen(command(["train", "--data", iris, "--checkpoint", ck, *ENDLESS], 2), env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (ck / "latest").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpinn: interrupted (SIGINT) at epoch "), err
    assert lines[0].endswith(f"checkpoint written to {ck}, rerun with --resume")
    attrs, _ = read_checkpoint(ck)  # checksum verified
    epoch, step = attrs["state"]["epoch"], attrs["state"]["step_in_epoch"]
    assert f"at epoch {epoch} step {step};" in lines[0]


def test_signal_during_setup_stops_before_training_without_a_checkpoint(iris, tmp_path):
    """MPINN_FAULT step 0: rank 1 is signalled once the data is loaded, before any step."""
    ck = tmp_path / "ck"
    proc = run(["train", "--data", iris, "--checkpoint", ck, *ENDLESS], np_=2, check=False,
               env=clean_env(MPINN_FAULT="1:0:term"))
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"mpinn: preempted (SIGTERM) before the first step; nothing trained, {ck} is as it was"]
    assert not (ck / "latest").exists()
