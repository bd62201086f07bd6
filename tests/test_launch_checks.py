"""What `mpinn` refuses before it writes anything: a launch of N separate 1-rank MPI worlds
(srun without a working --mpi plugin, mpi4py built against another MPI), and a checkpoint
folder that already holds another run. A run that fails before its first checkpoint leaves
no folder behind."""

import os
import subprocess

import pytest

from launch import BIN, MPINN, TIMEOUT, clean_env, run

MISMATCH = "separate 1-rank jobs"


def copies(args, cwd, **launcher_env):
    """Two copies of `mpinn ARGS` started at once, each its own 1-rank MPI world, with the
    variables a launcher gives its two tasks (as srun --mpi=none does)."""
    procs = [subprocess.Popen([MPINN, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=clean_env(SLURM_PROCID=rank, **launcher_env)) for rank in (0, 1)]
    return [(proc.wait(timeout=TIMEOUT), *proc.communicate()) for proc in procs]


# With OMPI_ variables, mpi4py built with MPICH adds its own warning ("suspicious MPI execution
# environment") before mpinn's line.
@pytest.mark.parametrize("variable,only_line", [("SLURM_STEP_NUM_TASKS", True), ("OMPI_COMM_WORLD_SIZE", False)])
def test_copies_of_a_one_rank_world_stop_before_touching_a_file(iris, tmp_path, variable, only_line):
    out = copies(["train", "--data", iris, "--epochs", "3", "--checkpoint", "ck", "--metrics", "m.jsonl"], tmp_path,
                 **{variable: 2})
    assert [code for code, _, _ in out] == [2, 2], out
    lines = [line for _, _, err in out for line in err.splitlines() if MISMATCH in line or only_line]
    assert len(lines) == 1 and MISMATCH in lines[0] and f"{variable}=2" in lines[0], out
    assert "srun --mpi=pmi2" in lines[0] and "MPIEXEC=mpiexec" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_info_and_the_estimators_refuse_it_too(iris, tmp_path):
    proc = run(["info"], check=False, env=clean_env(SLURM_STEP_NUM_TASKS=4))
    assert proc.returncode == 2 and MISMATCH in proc.stderr, proc.stderr
    script = ("import mpinn, numpy as np\n"
              "try:\n    mpinn.MLPClassifier(max_iter=2).fit(np.zeros((4, 2)), [0, 1, 0, 1])\n"
              "except ValueError as exc:\n    print('refused:', exc)\n")
    proc = subprocess.run([os.path.join(BIN, "python"), "-c", script], capture_output=True, text=True,
                          timeout=TIMEOUT, env=clean_env(SLURM_STEP_NUM_TASKS=2))
    assert proc.returncode == 0 and "refused:" in proc.stdout and MISMATCH in proc.stdout, proc.stdout + proc.stderr


def test_one_task_or_a_batch_script_with_many_tasks_is_a_normal_run(iris, tmp_path):
    """SLURM_NTASKS is set in a whole batch script, where one-process commands are right."""
    proc = run(["info"], env=clean_env(SLURM_STEP_NUM_TASKS=1, SLURM_NTASKS=8))
    assert "ranks: 1" in proc.stdout


def test_train_refuses_a_folder_holding_another_runs_checkpoints(iris, tmp_path):
    run(["train", "--data", iris, "--epochs", "2", "--checkpoint", "ck", "--quiet"], cwd=tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()}
    proc = run(["train", "--data", iris, "--epochs", "4", "--checkpoint", "ck", "--quiet"], np_=2, cwd=tmp_path,
               check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "already holds another run's checkpoints" in lines[0] and "--resume" in lines[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()} == before
    resumed = run(["train", "--data", iris, "--epochs", "4", "--checkpoint", "ck", "--quiet", "--resume"], np_=2,
                  cwd=tmp_path)
    assert "resumed from" in resumed.stdout + resumed.stderr


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(iris, tmp_path):
    proc = run(["train", "--data", iris, "--y-name", "labels", "--checkpoint", "new/ck"], np_=2, cwd=tmp_path,
               check=False)
    assert proc.returncode == 2 and "no dataset 'labels'" in proc.stderr, proc.stderr
    assert not (tmp_path / "new").exists()
    # And an unwritable place still fails before the work.
    proc = run(["train", "--data", iris, "--checkpoint", "/proc/mpinn/ck"], check=False)
    assert proc.returncode == 2 and "is not writable" in proc.stderr, proc.stderr
