"""`mpinn search --halving` end to end from a TOML grid at 2 ranks: scikit-learn's
HalvingGridSearchCV scores, the iter and n_resources columns, the refit with the best's
resources; SIGKILLed in the second iteration and resumed on 1 rank: only the unfinished tasks
run and the results are the same. Bad halving options: one line, exit 2."""

import csv
import json

import h5py
import pytest

import mpinn
from launch import clean_env, run

pytest.importorskip("sklearn")
GRID = "hidden = [[4], [8]]\nlr = [0.01, 0.05, 0.2]\nepochs = 8\nbatch-size = 50\n"
SCORES = ("mean_test_score", "std_test_score", "split0_test_score", "split2_test_score")


def halving_args(iris, grid, results, *extra):
    return ["search", "--data", iris, "--grid", grid, "--cv", 3, "--stratified", "--results", results,
            "--halving", "--factor", 2, *extra]


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def recorded(directory, pattern="iter-*"):
    return sum(1 for f in directory.glob(f"{pattern}/tasks-*.jsonl") for line in f.read_text().splitlines()
               if line.endswith("}") and json.loads(line))


def test_halving_end_to_end_then_killed_in_the_second_iteration_and_resumed(iris, tmp_path):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    a = run(halving_args(iris, grid, tmp_path / "a.csv"), np_=2)
    # 6 candidates on 37 rows, the best 3 on 74, the best 2 on 148: (6 + 3 + 2) x 3 folds
    assert "halving: 3 iterations, candidates [6, 3, 2], samples [37, 74, 148], factor 2" in a.stdout
    assert "tasks run: 33 (done before: 0) in " in a.stdout
    rows = read_csv(tmp_path / "a.csv")
    assert len(rows) == 11 and [int(r["iter"]) for r in rows].count(2) == 2

    # scikit-learn's HalvingGridSearchCV over the same pipeline (`mpinn train`'s default scaling)
    ref = HalvingGridSearchCV(make_pipeline(StandardScaler(), mpinn.MLPClassifier(max_iter=8, batch_size=50,
                                                                                   random_state=0)),
                              {"mlpclassifier__hidden_layer_sizes": [(4,), (8,)],
                               "mlpclassifier__learning_rate_init": [0.01, 0.05, 0.2]},
                              factor=2, cv=StratifiedKFold(3), random_state=0, refit=False)
    with h5py.File(iris) as f, pytest.warns(Warning):
        ref.fit(f["X"][()], f["y"][()])
    res = ref.cv_results_
    for row in rows:
        c = int(row["candidate"])
        assert (int(row["iter"]), int(row["n_resources"])) == (res["iter"][c], res["n_resources"][c])
        assert res["params"][c]["mlpclassifier__learning_rate_init"] == float(row["lr"])
        for key in SCORES:
            assert float(row[key]) == pytest.approx(res[key][c], abs=1e-10), key
    best = ref.best_params_
    assert f"best: candidate {ref.best_index_} (--hidden {best['mlpclassifier__hidden_layer_sizes'][0]}, --lr " \
           f"{best['mlpclassifier__learning_rate_init']})" in a.stdout
    assert mpinn.load(tmp_path / "a-best").hidden_layer_sizes == best["mlpclassifier__hidden_layer_sizes"]

    # Round-robin on 2 groups of 1: rank 1 runs 9 of the first iteration's 18 tasks and SIGKILLs
    # itself as it starts its 10th, its first of the second iteration; the job dies.
    ck = tmp_path / "ck"
    killed = run(halving_args(iris, grid, tmp_path / "b.csv", "--checkpoint", ck, "--allocation", "round-robin",
                              "--no-refit"), np_=2, check=False, env=clean_env(MPINN_FAULT="1:10:kill"))
    assert killed.returncode != 0 and not (tmp_path / "b.csv").exists()
    done = recorded(ck)
    assert recorded(ck, "iter-0") == 18 and done < 27  # the first iteration whole, the second in part
    resumed = run(halving_args(iris, grid, tmp_path / "b.csv", "--checkpoint", ck, "--resume", "--no-refit"), np_=1)
    assert f"tasks run: {33 - done} (done before: {done}) in " in resumed.stdout
    again = {r["candidate"]: r for r in read_csv(tmp_path / "b.csv")}
    for row in rows:
        assert again[row["candidate"]]["iter"] == row["iter"]
        for key in SCORES:
            assert float(again[row["candidate"]][key]) == pytest.approx(float(row[key]), abs=1e-12), key


def test_epochs_resource_warm_start_promoted_from_the_command_line(iris, tmp_path):
    """--resource epochs grows max_iter up to the grid's epochs; --warm-start-promoted gives the
    same results file; the refit trains the best candidate for its last iteration's epochs."""
    grid = tmp_path / "grid.toml"
    grid.write_text("hidden = [[4], [8], [16]]\nlr = [0.003, 0.01, 0.05]\nepochs = 9\nbatch-size = 50\n")
    out = {}
    for name, extra in (("cold", ["--no-refit"]), ("warm", ["--warm-start-promoted"])):
        proc = run(halving_args(iris, grid, tmp_path / f"{name}.csv", "--resource", "epochs", "--factor", 3, *extra))
        assert "halving: 3 iterations, candidates [9, 3, 1], epochs [1, 3, 9], factor 3" in proc.stdout
        out[name] = (proc.stdout, read_csv(tmp_path / f"{name}.csv"))
    for cold, warm in zip(out["cold"][1], out["warm"][1]):
        assert cold["candidate"] == warm["candidate"] and cold["epochs"] == warm["epochs"] == cold["n_resources"]
        for key in SCORES:
            assert float(warm[key]) == pytest.approx(float(cold[key]), abs=1e-12), key
    assert ", --epochs 9), mean_test_score" in out["warm"][0]
    assert mpinn.load(tmp_path / "warm-best").n_iter_ == 9


@pytest.mark.parametrize("extra,match", [
    (["--factor", "2"], "--factor: only with --halving"),
    (["--halving", "--warm-start-promoted"], "--warm-start-promoted: needs --resource epochs"),
    (["--halving", "--min-resources", "few"], "--min-resources: expected a number, exhaust or smallest"),
    (["--halving", "--scoring", "accuracy,neg_log_loss"], "--scoring: --halving ranks the candidates by one scorer"),
    (["--halving", "--resource", "epochs", "--min-resources", "50"], "--min-resources 50: more than the 8 epochs of the grid"),
])
def test_bad_halving_options_are_one_line_exit_2(iris, tmp_path, capsys, extra, match):
    from mpinn.cli.app import main

    (tmp_path / "grid.toml").write_text(GRID)
    code = main([str(a) for a in ["search", "--data", iris, "--grid", tmp_path / "grid.toml", "--cv", 3,
                                  "--results", tmp_path / "r.csv", *extra]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mpinn: error: ") and match in err[0], err
    assert not (tmp_path / "r.csv").exists()
