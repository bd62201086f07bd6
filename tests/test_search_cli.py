"""`mpinn search` launched as users launch it: end to end from a TOML grid, killed (SIGKILL on
one rank) and resumed on another rank count, bad grids, and error_score="raise" ending a job."""

import csv
import json
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest

import mpinn
from launch import clean_env, mpiexec, run

pytest.importorskip("sklearn")
GRID = "hidden = [[4], [8]]\nlr = [0.01, 0.05, 0.2]\nepochs = 8\nbatch-size = 100\n"
SCORES = ("mean_test_neg_log_loss", "split0_test_neg_log_loss", "split2_test_neg_log_loss", "mean_test_accuracy")


def search_args(iris, grid, *extra):
    return ["search", "--data", iris, "--grid", grid, "--cv", 3, "--stratified", "--scoring",
            "neg_log_loss,accuracy", *extra]


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_search_end_to_end_then_killed_and_resumed_on_another_rank_count(iris, tmp_path):
    """2 ranks end to end through run/search.sbatch (Slurm's variables faked, MPIEXEC for srun);
    2 ranks killed; resumed on 1 rank with the other allocation."""
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    script = Path(__file__).resolve().parents[1] / "run" / "search.sbatch"
    env = clean_env(SLURM_NTASKS=2, SLURM_SUBMIT_DIR=tmp_path, SLURM_JOB_ID=42, MPIEXEC=shlex.join(mpiexec()))
    a = subprocess.run([str(script), *map(str, search_args(iris, grid)[1:])], capture_output=True, text=True,
                       timeout=180, env=env, cwd=tmp_path)
    assert a.returncode == 0, a.stderr
    assert "tasks run: 18 (done before: 0) in " in a.stdout
    results = tmp_path / "search" / "42" / "results.csv"
    table = a.stdout.split("tasks run:")[1].splitlines()
    assert table[1].split()[:3] == ["rank", "mean_test_neg_log_loss", "std"] and table[2].startswith("1 ")
    rows = read_csv(results)
    assert len(rows) == 6 and [int(r["rank"]) for r in rows] == sorted(int(r["rank"]) for r in rows)
    assert {"hidden", "lr", "error", "mean_fit_time", "split2_test_accuracy"} <= set(rows[0])

    # The same search through the Python API on this one process, with scikit-learn's scaler in
    # front (`mpinn train`'s default --scale standard): the same scores.
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ref = mpinn.GridSearchCV(make_pipeline(StandardScaler(), mpinn.MLPClassifier(max_iter=8, batch_size=100,
                                                                                 random_state=0)),
                             {"mlpclassifier__hidden_layer_sizes": [(4,), (8,)],
                              "mlpclassifier__learning_rate_init": [0.01, 0.05, 0.2]},
                             scoring=["neg_log_loss", "accuracy"], refit="neg_log_loss", cv=StratifiedKFold(3))
    with h5py.File(iris) as f, pytest.warns(Warning):
        ref.fit(f["X"][()], f["y"][()])
    for row in rows:
        c = int(row["candidate"])
        assert float(row["mean_test_neg_log_loss"]) == pytest.approx(ref.cv_results_["mean_test_neg_log_loss"][c],
                                                                      abs=1e-10)
    # The best candidate trained by `mpinn train` on all rows: a checkpoint eval and mpinn.load take.
    best = ref.best_params_
    assert f"best: candidate {ref.best_index_} (--hidden {best['mlpclassifier__hidden_layer_sizes'][0]}, --lr " \
           f"{best['mlpclassifier__learning_rate_init']})" in a.stdout
    best_dir = tmp_path / "search" / "42" / "results-best"
    assert mpinn.load(best_dir).hidden_layer_sizes == best["mlpclassifier__hidden_layer_sizes"]
    assert "accuracy:" in run(["eval", "--model", best_dir, "--data", iris]).stdout

    # Rank 1 SIGKILLs itself as it starts its 3rd task; the job dies with some tasks recorded.
    killed = run(search_args(iris, grid, "--results", tmp_path / "b.csv", "--checkpoint", tmp_path / "ckB",
                             "--no-refit"),
                 np_=2, check=False, env=clean_env(MPINN_FAULT="1:3:kill"))
    assert killed.returncode != 0 and not (tmp_path / "b.csv").exists()
    done = sum(1 for f in (tmp_path / "ckB").glob("tasks-*.jsonl") for line in f.read_text().splitlines()
               if line.endswith("}") and json.loads(line))
    assert 2 <= done < 18
    resumed = run(search_args(iris, grid, "--results", tmp_path / "b.csv", "--checkpoint", tmp_path / "ckB",
                              "--resume", "--allocation", "round-robin", "--no-refit"), np_=1)
    assert f"tasks run: {18 - done} (done before: {done}) in " in resumed.stdout
    again = {r["candidate"]: r for r in read_csv(tmp_path / "b.csv")}
    for row in rows:
        for key in SCORES:
            assert float(again[row["candidate"]][key]) == pytest.approx(float(row[key]), abs=1e-12), key


@pytest.mark.parametrize("text,args,match", [
    ("lr = [0.1, 0.2]\nwidth = [3]\n", [], "width: not a searchable `mpinn train` option"),
    ("lr = []\n", [], "lr: empty list of values"),
    ('lr = [0.1, "fast"]\n', [], "lr: expected int/float, got 'fast'"),
    ("hidden = [[4], [0]]\n", [], "--hidden: layer sizes must be integers >= 1"),
    ("lr = [0.1, 0.2]\n", ["--group-size", "2"], "--group-size 2 does not divide the 1 ranks"),
])
def test_bad_grid_is_one_line_exit_2_before_training(iris, tmp_path, capsys, text, args, match):
    from mpinn.cli.app import main

    (tmp_path / "grid.toml").write_text(text)
    code = main([str(a) for a in search_args(iris, tmp_path / "grid.toml", "--results", tmp_path / "r.csv",
                                             "--checkpoint", tmp_path / "ck", *args)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mpinn: error: ") and match in err[0]
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "ck").exists()


def test_bad_grid_on_every_rank(iris, tmp_path):
    (tmp_path / "grid.toml").write_text("lr = [0.1]\ngroup = [2]\n")
    proc = run(search_args(iris, tmp_path / "grid.toml", "--results", tmp_path / "r.csv"), np_=2, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith(f"mpinn: error: --grid {tmp_path / 'grid.toml'}: group: not a searchable")


# Row 0 holds a NaN, so fold 0's fit raises at once; folds 1 and 2 are long fits (about 190,000
# steps each) that the other groups are in the middle of when the search must stop.
RAISING = textwrap.dedent("""
    import sys, time, warnings
    warnings.simplefilter("ignore")
    import numpy as np
    import mpinn
    from sklearn.datasets import load_iris
    X, y = load_iris(return_X_y=True)
    X[0, 0] = np.nan
    rows = np.arange(150)
    cv = [(rows[:75], rows[75:]), (rows[75:], rows[:75]), (rows[1::2], rows[::2])]
    est = mpinn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=25000, batch_size=10, tol=0, n_iter_no_change=10**6,
                              random_state=0)
    search = mpinn.GridSearchCV(est, {"alpha": [1e-4]}, cv=cv, error_score="raise", group_size=int(sys.argv[1]),
                                allocation="round-robin")
    print("start", time.time(), flush=True)
    try:
        search.fit(X, y)
    except ValueError as exc:  # the estimator's own error, on every rank, as scikit-learn raises it
        print("raised", type(exc).__name__, str(exc).splitlines()[0], flush=True)
        sys.exit(1)
    print("finished", flush=True)
""")


@pytest.mark.parametrize("ranks,group_size", [(2, 2), (3, 1)])
def test_error_score_raise_ends_every_rank_quickly(tmp_path, ranks, group_size):
    script = tmp_path / "raising.py"
    script.write_text(RAISING)
    proc = subprocess.run([*mpiexec(), "-n", str(ranks), sys.executable, str(script), str(group_size)],
                          capture_output=True, text=True, timeout=120, env=clean_env())
    ended = time.time()
    started = float(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("start")))
    assert proc.returncode != 0 and "finished" not in proc.stdout
    # No abort: the library raises the failing fit's ValueError on every rank, the other groups
    # stopping at their next step or task boundary, and the script decides what to do with it.
    # (the ranks' lines may interleave on the shared stdout: count, do not split)
    assert proc.stdout.count("raised") == ranks and proc.stdout.count("contains NaN") == ranks, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert ended - started < 10


def test_a_group_of_two_ranks_gives_the_one_rank_scores(iris, tmp_path):
    """--group-size 2 on 2 ranks, shuffled folds: each rank reads only its share of a fold's rows
    from the file (data/rows.py) and scores its block of the test rows; the table is the 1-rank one."""
    (tmp_path / "grid.toml").write_text("hidden = [[8]]\nlr = [0.01, 0.2]\nepochs = 8\nbatch-size = 50\n")
    tables = {}
    for n in (1, 2):
        run(search_args(iris, tmp_path / "grid.toml", "--seed", 3, "--group-size", n, "--no-refit",
                        "--results", tmp_path / f"r{n}.csv"), np_=n)
        tables[n] = read_csv(tmp_path / f"r{n}.csv")
    scores = [k for k in tables[1][0] if k.startswith(("mean_test_", "split"))]
    assert len(tables[2]) == len(tables[1]) == 2 and len(scores) == 8
    for two, one in zip(tables[2], tables[1]):
        for key in scores:
            assert float(two[key]) == pytest.approx(float(one[key]), abs=1e-12), key
