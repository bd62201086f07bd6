"""Elastic training: a rank dies (SIGKILL, MPINN_FAULT=R:STEP:kill) and the others go on.

The runs under ULFM need Open MPI 5 launched with `mpirun --with-ft ulfm`: `make test-elastic`
installs an Open MPI venv, runs this file with its python and sets MPINN_ULFM_MPIRUN to that
launcher; elsewhere those tests skip. The MPICH tests (elastic is refused there, with a reason)
run in `make test`. Every launch is under a timeout: a survivor left waiting fails the test.
"""

import json
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

from launch import MPINN, clean_env, run

ULFM = os.environ.get("MPINN_ULFM_MPIRUN")
needs_ulfm = pytest.mark.skipif(not ULFM, reason="needs Open MPI under --with-ft ulfm (make test-elastic)")
TRAIN = ["--epochs", "10", "--hidden", "24", "--seed", "3", "--quiet"]
LOST = re.compile(r"rank(?:s)? ([\d, ]+) lost at epoch (\d+) step (\d+); continuing on (\d+) rank\(s\) "
                  r"\(recovery ([\d.]+) s, from epoch (\d+) step (\d+)\)")


def ulfm(args, n, fault=None, timeout=120, cwd=None):
    """`mpirun --with-ft ulfm -n N mpinn ARGS` with MPINN_FAULT; (CompletedProcess, seconds)."""
    env = clean_env(**({"MPINN_FAULT": fault} if fault else {}))
    cmd = [*shlex.split(ULFM), "-n", str(n), MPINN, *map(str, args)]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    return proc, time.monotonic() - start


def weights(directory):
    latest = (directory / "latest").read_text().strip()
    with h5py.File(directory / latest, "r") as f:
        return [f[f"{kind}/{i}"][...] for kind in ("coefs", "intercepts") for i in range(len(f["coefs"]))]


def assert_same_model(a, b, atol=1e-12):
    for x, y in zip(weights(a), weights(b)):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("elastic") / "digits.h5"
    run(["data", "digits", path])
    return path


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    """Uninterrupted 3-rank runs, one per strategy (the model does not depend on it)."""
    if not ULFM:
        pytest.skip("needs Open MPI under --with-ft ulfm")
    base = tmp_path_factory.mktemp("reference")
    out = {}
    for name, extra in {"allreduce": [], "sharded": ["--sync", "sharded"], "small": ["--batch-size", "10"]}.items():
        proc, _ = ulfm(["train", "--data", digits, *TRAIN, *extra, "--checkpoint", base / name], 3)
        assert proc.returncode == 0, proc.stderr
        out[name] = base / name
    return out


@needs_ulfm
@pytest.mark.parametrize("sync", ["allreduce", "sharded"])
@pytest.mark.parametrize("dead", [1, 0])
def test_rank_killed_training_goes_on_with_the_uninterrupted_model(digits, reference, tmp_path, sync, dead):
    proc, _ = ulfm(["train", "--data", digits, *TRAIN, "--sync", sync, "--checkpoint", tmp_path / "ck",
                    "--metrics", tmp_path / "m.jsonl"], 3, fault=f"{dead}:40:kill")
    assert proc.returncode == 0, proc.stderr
    lost = LOST.search(proc.stderr)
    assert lost, proc.stderr
    assert lost.group(1) == str(dead) and lost.group(4) == "2"
    # Step 40 of 9-step epochs is epoch 4's 4th: the survivors replay it from its start.
    assert (lost.group(2), lost.group(3), lost.group(6), lost.group(7)) == ("4", "3", "4", "0")
    assert_same_model(tmp_path / "ck", reference[sync])
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in records if "epoch" in r]
    assert epochs == list(range(1, 11)), "each epoch recorded once, across the recovery"
    events = [r["rank_lost"] for r in records if "rank_lost" in r]
    assert [e["ranks"] for e in events] == [[dead]] and events[0]["continued_on"] == 2


@needs_ulfm
def test_death_inside_an_epoch_replays_from_the_last_snapshot_in_it(digits, reference, tmp_path):
    # Batches of 10: 180 steps per epoch, a snapshot every 100 steps; killed at step 150.
    proc, _ = ulfm(["train", "--data", digits, *TRAIN, "--batch-size", "10", "--checkpoint", tmp_path / "ck"], 3,
                   fault="2:150:kill")
    assert proc.returncode == 0, proc.stderr
    lost = LOST.search(proc.stderr)
    assert lost and (lost.group(6), lost.group(7)) == ("0", "100"), proc.stderr
    assert_same_model(tmp_path / "ck", reference["small"])


@needs_ulfm
def test_two_of_four_ranks_lost_at_different_steps(digits, reference, tmp_path):
    proc, _ = ulfm(["train", "--data", digits, *TRAIN, "--checkpoint", tmp_path / "ck"], 4,
                   fault="3:20:kill;1:55:kill")
    assert proc.returncode == 0, proc.stderr
    lost = LOST.findall(proc.stderr)
    assert [(m[0], m[3]) for m in lost] == [("3", "3"), ("1", "2")], proc.stderr
    assert_same_model(tmp_path / "ck", reference["allreduce"])


@needs_ulfm
def test_local_averaging_continues_as_a_resume_on_fewer_ranks(digits, tmp_path):
    args = ["train", "--data", digits, *TRAIN, "--sync", "local:4"]
    proc, _ = ulfm([*args, "--checkpoint", tmp_path / "ck"], 3, fault="1:40:kill")
    assert proc.returncode == 0, proc.stderr
    lost = LOST.search(proc.stderr)
    assert lost and lost.group(7) == "0", proc.stderr  # model averaging rolls back to an epoch's end
    epoch = int(lost.group(6))
    # Its documented rule: the model of a run stopped there and resumed on the survivors.
    stopped = ["train", "--data", digits, *TRAIN[2:], "--sync", "local:4", "--checkpoint", tmp_path / "ref"]
    assert ulfm([*stopped, "--epochs", epoch], 3)[0].returncode == 0
    resumed, _ = ulfm([*stopped, "--epochs", "10", "--resume"], 2)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_model(tmp_path / "ck", tmp_path / "ref")


@needs_ulfm
def test_below_min_ranks_checkpoints_exits_75_and_resume_equals(digits, reference, tmp_path):
    proc, seconds = ulfm(["train", "--data", digits, *TRAIN, "--checkpoint", tmp_path / "ck", "--min-ranks", "3"], 3,
                         fault="1:40:kill")
    assert proc.returncode == 75, (proc.returncode, proc.stderr)
    assert "fewer than --min-ranks 3" in proc.stderr and seconds < 60
    resumed, _ = ulfm(["train", "--data", digits, *TRAIN, "--checkpoint", tmp_path / "ck", "--resume"], 2)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_model(tmp_path / "ck", reference["allreduce"])


@needs_ulfm
def test_failure_during_recovery_is_recovered_too(digits, reference, tmp_path):
    # Rank 2 dies while the survivors of rank 1's death recover; rank 0 finishes alone.
    proc, _ = ulfm(["train", "--data", digits, *TRAIN, "--checkpoint", tmp_path / "ck"], 3,
                   fault="1:40:kill;2:recovery:kill")
    assert proc.returncode == 0, proc.stderr
    assert "continuing on 1 rank(s)" in proc.stderr, proc.stderr
    assert_same_model(tmp_path / "ck", reference["allreduce"])


@needs_ulfm
def test_failure_during_recovery_below_min_ranks_ends_every_survivor(digits, tmp_path):
    proc, seconds = ulfm(["train", "--data", digits, *TRAIN, "--checkpoint", tmp_path / "ck", "--min-ranks", "2"],
                         3, fault="1:40:kill;2:recovery:kill", timeout=90)
    assert proc.returncode == 75, (proc.returncode, proc.stderr)
    assert seconds < 30 + 20, seconds  # start-up and training included


@needs_ulfm
def test_ulfm_start_line_says_elastic(digits):
    proc, _ = ulfm(["train", "--data", digits, "--epochs", "1", "--hidden", "8"], 2)
    assert proc.returncode == 0, proc.stderr
    assert ", elastic: yes" in proc.stdout


def test_mpich_start_line_says_why_not_and_elastic_flag_is_exit_2(digits, tmp_path):
    if ULFM:
        pytest.skip("the MPICH behaviour; this run is Open MPI's")
    proc = run(["train", "--data", digits, "--epochs", "1", "--hidden", "8"], np_=2)
    assert re.search(r", elastic: no \(MPICH has no ULFM\)$", proc.stdout.splitlines()[0]), proc.stdout
    bad = run(["train", "--data", digits, "--epochs", "1", "--elastic", "--checkpoint", tmp_path / "ck"], np_=2,
              check=False)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpinn: error: --elastic: this run cannot survive"), bad.stderr
    assert "MPICH has no ULFM" in lines[0] and not (tmp_path / "ck").exists()
    assert run(["train", "--data", digits, "--min-ranks", "0"], check=False).returncode == 2


# ---- mpinn search: the survivors continue from the task log ------------------------------------

SEARCH_LOST = re.compile(r"rank(?:s)? ([\d, ]+) lost during the search; continuing on (\d+) rank\(s\) in groups of "
                         r"(\d+) from the tasks recorded in \S+ \(recovery [\d.]+ s\)")


def search_args(digits, tmp_path, name, *extra):
    grid = tmp_path / "grid.toml"
    grid.write_text("hidden = [[16], [32]]\nlr = [0.001, 0.01]\nepochs = 5\nseed = 3\n")
    return ["search", "--data", digits, "--grid", grid, "--cv", 3, "--results", tmp_path / f"{name}.jsonl",
            "--checkpoint", tmp_path / f"{name}.ck", "--no-refit", *extra]


def scores(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return np.array([[v for k, v in sorted(row.items()) if "_test_" in k and isinstance(v, float)] for row in rows])


def recorded_once(checkpoint, n_tasks):
    """Each task id appears exactly once over the task log's files (of every halving iteration)."""
    for folder in sorted({p.parent for p in checkpoint.rglob("tasks-*.jsonl")}):
        tasks = [json.loads(line)["task"] for f in folder.glob("tasks-*.jsonl") for line in f.read_text().splitlines()]
        assert sorted(tasks) == list(range(n_tasks.pop(0))), (folder, sorted(tasks))
    assert not n_tasks


@pytest.fixture(scope="module")
def search_reference(digits, tmp_path_factory):
    """The uninterrupted 3-rank search, and its halving variant."""
    if not ULFM:
        pytest.skip("needs Open MPI under --with-ft ulfm")
    base = tmp_path_factory.mktemp("search")
    for name, extra in (("plain", []), ("halving", ["--halving"])):
        proc, _ = ulfm(search_args(digits, base, name, *extra), 3)
        assert proc.returncode == 0, proc.stderr
    return {name: scores(base / f"{name}.jsonl") for name in ("plain", "halving")}


@needs_ulfm
@pytest.mark.parametrize("dead", [2, 0])
def test_search_rank_killed_mid_task_every_task_recorded_once_same_scores(digits, search_reference, tmp_path, dead):
    """Groups of 1, dynamic: rank DEAD dies as it starts its 2nd task (`mpinn search` counts
    MPINN_FAULT in tasks); that task is not recorded, and the survivors run it again."""
    proc, seconds = ulfm(search_args(digits, tmp_path, "s"), 3, fault=f"{dead}:2:kill")
    assert proc.returncode == 0, proc.stderr
    lost = SEARCH_LOST.search(proc.stderr)
    assert lost and lost.groups() == (str(dead), "2", "1"), proc.stderr
    assert "on 2 rank(s) in groups of 1, allocation dynamic, elastic: yes" in proc.stdout
    assert "tasks run: 12 (done before: 0)" in proc.stdout, proc.stdout
    recorded_once(tmp_path / "s.ck", [12])
    np.testing.assert_allclose(scores(tmp_path / "s.jsonl"), search_reference["plain"], rtol=0, atol=1e-12)


@needs_ulfm
def test_search_in_groups_of_two_goes_on_in_groups_of_one(digits, search_reference, tmp_path):
    """4 ranks in groups of 2, rank 3 dies: 3 survivors cannot form pairs, so groups of 1."""
    proc, _ = ulfm(search_args(digits, tmp_path, "s", "--group-size", 2), 4, fault="3:2:kill")
    assert proc.returncode == 0, proc.stderr
    assert SEARCH_LOST.search(proc.stderr).groups() == ("3", "3", "1"), proc.stderr
    recorded_once(tmp_path / "s.ck", [12])
    np.testing.assert_allclose(scores(tmp_path / "s.jsonl"), search_reference["plain"], rtol=0, atol=1e-12)


@needs_ulfm
def test_halving_search_rank_0_killed_continues_its_iteration(digits, search_reference, tmp_path):
    proc, _ = ulfm(search_args(digits, tmp_path, "s", "--halving"), 3, fault="0:2:kill")
    assert proc.returncode == 0, proc.stderr
    assert SEARCH_LOST.search(proc.stderr).groups()[:2] == ("0", "2"), proc.stderr
    recorded_once(tmp_path / "s.ck", [12, 6])
    np.testing.assert_allclose(scores(tmp_path / "s.jsonl"), search_reference["halving"], rtol=0, atol=1e-12)


PYTHON_SEARCH = """
import os, signal, sys
import h5py
from mpi4py import MPI
import mpinn
from mpinn.parallel.comm import is_process_failure

with h5py.File(sys.argv[1]) as f:
    X, y = f["X"][()], f["y"][()]
search = mpinn.GridSearchCV(mpinn.MLPClassifier(max_iter=5, hidden_layer_sizes=(16,)),
                            {"learning_rate_init": [0.001, 0.01, 0.1]}, cv=3)
started = [0]

def kill_rank_2_at_its_second_task():
    started[0] += 1
    if MPI.COMM_WORLD.rank == 2 and started[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)

search._task_hook = kill_rank_2_at_its_second_task
try:
    search.fit(X, y)
    print(MPI.COMM_WORLD.rank, "finished", flush=True)
except Exception as exc:
    print(MPI.COMM_WORLD.rank, "process failure" if is_process_failure(exc) else repr(exc), flush=True)
os._exit(0)
"""


@needs_ulfm
def test_python_search_raises_the_process_failure_on_every_survivor(digits, tmp_path):
    """GridSearchCV from a script is not continued, but no survivor waits for the dead rank."""
    script = tmp_path / "search.py"
    script.write_text(PYTHON_SEARCH)
    env = clean_env()
    proc = subprocess.run([*shlex.split(ULFM), "-n", "3", sys.executable, str(script), str(digits)],
                          capture_output=True, text=True, timeout=120, env=env)
    said = sorted(line for line in proc.stdout.splitlines() if line[:1].isdigit())
    assert said == ["0 process failure", "1 process failure"], proc.stdout + proc.stderr


@needs_ulfm
def test_search_elastic_needs_a_checkpoint(digits, tmp_path):
    args = search_args(digits, tmp_path, "s")
    args = args[:args.index("--checkpoint")] + ["--no-refit", "--elastic"]
    proc, _ = ulfm(args, 2)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--elastic: this search cannot survive a rank's death (no --checkpoint" in lines[0]
    assert not (tmp_path / "s.jsonl").exists()


def test_mpich_search_says_why_not_and_elastic_flag_is_exit_2(digits, tmp_path):
    if ULFM:
        pytest.skip("the MPICH behaviour; this run is Open MPI's")
    proc = run(search_args(digits, tmp_path, "s"), np_=2)
    assert "elastic: no (MPICH has no ULFM)" in proc.stdout, proc.stdout
    bad = run(search_args(digits, tmp_path, "t", "--elastic"), np_=2, check=False)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "--elastic: this search cannot survive a rank's death (MPICH has no ULFM)" in lines[0]
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "t.ck").exists()


@needs_ulfm
def test_bench_script_measures_overhead_and_recovery(tmp_path):
    bench = Path(__file__).resolve().parents[1] / "bench" / "elastic.py"
    proc = subprocess.run([sys.executable, str(bench), "--ompi-venv", str(Path(sys.executable).parents[1]),
                           "--rows", "600", "--features", "8", "--hidden", "8", "--batch", "64", "--epochs", "2",
                           "--pairs", "1", "--syncs", "sharded"], capture_output=True, text=True, timeout=300,
                          env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.split("BENCH_JSON ", 1)[1])
    assert len(report["sharded"]["ratios"]) == 1 and report["recovery"]["recovery_seconds"] is not None


@needs_ulfm
def test_local_sh_elastic_survives_a_kill(digits, reference, tmp_path):
    script = Path(__file__).resolve().parents[1] / "run" / "local.sh"
    launcher = shlex.split(ULFM)
    launcher = [w for w in launcher if w not in ("--with-ft", "ulfm")]  # ELASTIC=1 adds them
    env = clean_env(MPIEXEC=shlex.join(launcher), ELASTIC=1, MPINN_FAULT="2:40:kill", BIND="none")
    proc = subprocess.run([str(script), "3", "--data", str(digits), *TRAIN, "--checkpoint", str(tmp_path / "ck")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert LOST.search(proc.stderr), proc.stderr
    assert_same_model(tmp_path / "ck", reference["allreduce"])


def test_metrics_cut_back_to_the_snapshots_epoch(tmp_path):
    from mpinn.train.elastic import truncate_metrics

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"config": {}, "ranks": 3}\n' + "".join(f'{{"epoch": {e}, "loss": 1.0}}\n' for e in (1, 2, 3))
                     + '{"epoch": 4, "lo')  # rank 0 died while writing epoch 4
    truncate_metrics(str(jsonl), 2)
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == \
        [{"config": {}, "ranks": 3}, {"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 1.0}]
    table = tmp_path / "m.csv"
    table.write_text("epoch,loss\n1,0.5\n2,0.4\n3,0.3\n4,0.")
    truncate_metrics(str(table), 3)
    assert table.read_text() == "epoch,loss\n1,0.5\n2,0.4\n3,0.3\n"
    truncate_metrics(str(tmp_path / "none.jsonl"), 1)  # no file yet: nothing to cut
    assert not (tmp_path / "none.jsonl").exists()


def test_snapshot_keys_order_steps_and_epoch_ends_and_agreement_takes_a_held_one():
    from mpinn.parallel.comm import Comm, SerialComm
    from mpinn.train.elastic import RankLost, Snapshots

    key = Snapshots.key
    assert key(9, False) < key(9, True) < key(10, False)
    snaps = Snapshots(keep=3)
    for k in (key(0, True), key(50, False), key(90, True), key(100, False)):
        snaps._held[k] = ({"epoch": k}, {"params": np.full(2, float(k))}, None)
    # One process: the newest held snapshot is the agreed one; later ones are dropped.
    got, scalars, arrays, _ = snaps.agreed(Comm(SerialComm()))
    assert got == key(100, False) and scalars == {"epoch": key(100, False)}
    arrays["params"][:] = -1  # a copy: the held snapshot stays as taken
    assert snaps._held[key(100, False)][1]["params"][0] == key(100, False)
    with pytest.raises(RankLost):
        Snapshots().agreed(Comm(SerialComm()))  # nothing held
