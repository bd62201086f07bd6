"""A signal during a 2-rank search (`mpinn search` and the Python API): every rank stops after the
finished tasks are on disk, with one line and exit 75 (SIGTERM) or 130 (SIGINT); no task is
recorded with the signal as its result; a resumed search runs exactly the unfinished tasks and
every score equals the uninterrupted search's."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mpinn

from launch import clean_env, mpiexec, run

pytest.importorskip("sklearn")
GRID = "hidden = [[4], [8]]\nlr = [0.01, 0.05, 0.2]\nepochs = 8\nbatch-size = 100\n"
SCORES = ("mean_test_neg_log_loss", "split0_test_neg_log_loss", "split2_test_neg_log_loss", "mean_test_accuracy")


def search_args(iris, grid, *extra):
    return ["search", "--data", iris, "--grid", grid, "--cv", 3, "--stratified", "--scoring",
            "neg_log_loss,accuracy", "--no-refit", *extra]


def records(directory):
    """Every task record in a search checkpoint directory."""
    return [json.loads(line) for f in sorted(directory.glob("tasks-*.jsonl"))
            for line in f.read_text().splitlines() if line.endswith("}")]


def table(path):
    import csv

    with open(path, newline="") as fh:
        return {row["candidate"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def uninterrupted(iris, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    (tmp / "grid.toml").write_text(GRID)
    run(search_args(iris, tmp / "grid.toml", "--results", tmp / "whole.csv"), np_=2)
    return table(tmp / "whole.csv")


@pytest.mark.parametrize("kind,code,word", [("term", 75, "SIGTERM"), ("int", 130, "SIGINT")])
def test_cli_search_signalled_stops_with_its_code_and_resumes_exactly(iris, tmp_path, uninterrupted, kind, code,
                                                                       word):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    ck = tmp_path / "ck"
    # Rank 1 signals itself as it starts its 3rd task: its fit stops at the next step, and the
    # other group at its next step (a STOP notice) or task boundary.
    proc = run(search_args(iris, grid, "--results", tmp_path / "r.csv", "--checkpoint", ck),
               np_=2, check=False, timeout=120, env=clean_env(MPINN_FAULT=f"1:3:{kind}"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code and len(lines) == 1 and word in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.csv").exists()
    done = records(ck)
    assert 2 <= len(done) < 18 and all(r["error"] is None and r["test"] for r in done), done
    resumed = run(search_args(iris, grid, "--results", tmp_path / "r.csv", "--checkpoint", ck, "--resume"), np_=2)
    assert f"tasks run: {18 - len(done)} (done before: {len(done)}) in " in resumed.stdout
    again = table(tmp_path / "r.csv")
    for c, row in uninterrupted.items():
        for key in SCORES:
            assert float(again[c][key]) == pytest.approx(float(row[key]), abs=1e-12), key


API = textwrap.dedent("""
    import json, os, signal, sys, warnings
    warnings.simplefilter("ignore")
    from sklearn.datasets import load_iris
    from sklearn.model_selection import StratifiedKFold
    import mpinn
    from mpi4py import MPI

    X, y = load_iris(return_X_y=True)
    checkpoint, kind = sys.argv[1], sys.argv[2]
    search = mpinn.GridSearchCV(mpinn.MLPClassifier(max_iter=8, batch_size=100, random_state=0),
                                {"hidden_layer_sizes": [(4,), (8,)], "learning_rate_init": [0.01, 0.05, 0.2]},
                                cv=StratifiedKFold(3), scoring="neg_log_loss", checkpoint=checkpoint)
    if kind != "none" and MPI.COMM_WORLD.Get_rank() == 1:
        started = [0]

        def hook():  # as `mpinn search`'s MPINN_FAULT: rank 1 signals itself at its 3rd task
            started[0] += 1
            if started[0] == 3:
                os.kill(os.getpid(), signal.SIGTERM if kind == "term" else signal.SIGINT)

        search._task_hook = hook
    try:
        search.fit(X, y)
    except mpinn.Preempted as exc:
        print("raised Preempted", flush=True)
        sys.exit(75)
    except KeyboardInterrupt:
        print("raised KeyboardInterrupt", flush=True)
        sys.exit(130)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps({"run": search.tasks_run_, "resumed": search.tasks_resumed_,
                          "scores": [list(map(float, search.cv_results_[f"split{k}_test_score"])) for k in range(3)]}))
""")


@pytest.mark.parametrize("kind,code,name", [("term", 75, "Preempted"), ("int", 130, "KeyboardInterrupt")])
def test_api_search_signalled_raises_on_every_rank_and_resumes_exactly(tmp_path, kind, code, name):
    script = tmp_path / "search.py"
    script.write_text(API)

    def launch(ck, what):
        return subprocess.run([*mpiexec(), "-n", "2", sys.executable, str(script), str(ck), what],
                              capture_output=True, text=True, timeout=120, env=clean_env())

    whole = launch(tmp_path / "whole", "none")
    assert whole.returncode == 0, whole.stderr
    reference = json.loads(whole.stdout.splitlines()[-1])
    stopped = launch(tmp_path / "ck", kind)
    assert stopped.returncode == code and stopped.stdout.count(f"raised {name}") == 2, stopped.stdout + stopped.stderr
    done = records(tmp_path / "ck")
    assert 2 <= len(done) < 18 and all(r["error"] is None for r in done)
    again = launch(tmp_path / "ck", "none")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout.splitlines()[-1])
    assert (result["run"], result["resumed"]) == (18 - len(done), len(done))
    np.testing.assert_allclose(result["scores"], reference["scores"], rtol=0, atol=1e-12)


def test_cli_search_whose_refit_is_preempted_exits_75(iris, tmp_path):
    """The refit is `mpinn train`: preempted, it checkpoints and the search exits 75 (on main
    3b76c1d the search ignored the refit's 75 and exited 0, so no requeue happened)."""
    grid = tmp_path / "grid.toml"
    grid.write_text("lr = [0.05]\nepochs = 40\nbatch-size = 50\n")
    # Each task fits 75 rows (2 steps an epoch, 80 in all); the refit fits 150 (3 an epoch, 120):
    # the fault at step 85, counted in each fit, fires in the refit only (it converges at 93).
    args = ["search", "--data", iris, "--grid", grid, "--cv", 2, "--results", tmp_path / "r.csv",
            "--checkpoint", tmp_path / "ck"]
    proc = run(args, np_=2, check=False, timeout=120, env=clean_env(MPINN_FAULT="0:85:term"))
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "preempted" in proc.stderr and (tmp_path / "r.csv").exists()
    # The requeued job: --resume runs no task and continues the refit from its checkpoint, to the
    # model an uninterrupted refit gives.
    again = run([*args, "--resume"], np_=2, timeout=120)
    assert "tasks run: 0 (done before: 2)" in again.stdout, again.stdout
    whole = run(["search", "--data", iris, "--grid", grid, "--cv", 2, "--results", tmp_path / "whole.csv"], np_=2,
                timeout=120)
    assert whole.returncode == 0
    resumed, uninterrupted = mpinn.load(tmp_path / "r-best"), mpinn.load(tmp_path / "whole-best")
    for a, b in zip(resumed.coefs_ + resumed.intercepts_, uninterrupted.coefs_ + uninterrupted.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # A new search (no --resume) into results whose refit folder holds checkpoints: refused first.
    refused = run(args[:-2], np_=2, check=False, timeout=120)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "r-best" in lines[0], refused.stderr
