"""`mpinn train --mlflow`: one MLflow run per job, from rank 0, in a real local store."""

import json
import os

import pytest

from launch import clean_env, run
from mpinn.train.logs import epoch_records


def store_env(store, **extra):
    # A file store: mlflow-skinny has no SQL backend, and MLflow 3 wants this variable for one.
    return clean_env(MLFLOW_TRACKING_URI=store.as_uri(), MLFLOW_ALLOW_FILE_STORE="true", **extra)


def test_two_ranks_log_one_run_with_the_metrics_files_numbers(iris, tmp_path, monkeypatch):
    store, metrics, ck = tmp_path / "mlruns", tmp_path / "m.jsonl", tmp_path / "ck"
    proc = run(["train", "--data", iris, "--test-fraction", "0.2", "--hidden", "6", "--epochs", "4", "--seed", "3",
                "--mlflow", "iris-2", "--metrics", metrics, "--checkpoint", ck, "--json"], np_=2,
               env=store_env(store))
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert "warning" not in proc.stderr, proc.stderr
    mlflow = pytest.importorskip("mlflow")  # the test extra installs mlflow-skinny (~3 s to import)

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(store.as_uri())
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert len(runs) == 1  # not one per rank
    found = runs[0]
    assert found.info.run_name == "iris-2" and found.info.status == "FINISHED"

    config, *records = [json.loads(line) for line in open(metrics)]
    assert found.data.params == {k: str(v) for k, v in config["config"].items() if v is not None}
    assert found.data.tags["mpinn.ranks"] == "2"
    keys = {k for r in records for k, v in r.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert {"loss", "test_accuracy", "learning_rate", "seconds"} <= keys
    assert set(found.data.metrics) == keys
    for key in keys:
        history = sorted((m.step, m.value) for m in client.get_metric_history(found.info.run_id, key))
        assert history == [(r["epoch"], float(r[key])) for r in records if key in r], key

    artifacts = [a.path for a in client.list_artifacts(found.info.run_id, "checkpoint")]
    name = os.path.basename(summary["checkpoint"])
    assert artifacts == [f"checkpoint/{name}"]
    local = client.download_artifacts(found.info.run_id, f"checkpoint/{name}", str(tmp_path))
    with open(local, "rb") as logged, open(summary["checkpoint"], "rb") as written:
        assert logged.read() == written.read()


def test_without_mlflow_every_rank_exits_2_naming_the_extra(iris, tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text('import sys\nsys.modules["mlflow"] = None  # as if not installed\n')
    metrics = tmp_path / "m.jsonl"
    proc = run(["train", "--data", iris, "--epochs", "2", "--mlflow", "--metrics", metrics], np_=2, check=False,
               env=store_env(tmp_path / "mlruns", PYTHONPATH=hide))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mpinn: error: --mlflow needs MLflow (ModuleNotFoundError: import of mlflow halted; None in sys.modules): "
        "pip install 'mpinn[mlflow]'"]
    assert not metrics.exists() and not (tmp_path / "mlruns").exists()


def test_a_run_that_cannot_start_is_an_input_error(monkeypatch):
    """Raised by on_root on every rank (tests/test_agreement.py), so the CLI exits 2 before training."""
    pytest.importorskip("mlflow")
    from mpinn.errors import InputError
    from mpinn.parallel.comm import world
    from mpinn.train.tracking import MlflowTracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://tracking")
    with pytest.raises(InputError, match=r"^--mlflow: no MLflow run at nosuchscheme://tracking: \w+: [^\n]+$"):
        MlflowTracker(world()).start({"epochs": 2})


class FailingClient:
    def __init__(self):
        self.calls = 0

    def log_batch(self, *args, **kwargs):
        self.calls += 1
        raise ConnectionError("tracking server went away")


def test_a_failure_after_the_start_is_one_warning_and_training_goes_on():
    from mpinn.parallel.comm import world
    from mpinn.train.tracking import MlflowTracker

    said = []
    tracker = MlflowTracker(world(), on_failure=said.append)
    tracker.client, tracker.run_id, tracker.active = FailingClient(), "r", True  # as start() leaves rank 0
    for epoch in (1, 2, 3):
        tracker.log_epoch({"epoch": epoch, "loss": 0.5})
    tracker.end()
    assert tracker.client.calls == 1 and not tracker.active
    assert said == ["MLflow: logging epoch 1 failed (ConnectionError: tracking server went away); "
                    "tracking stopped, training goes on"]


def test_an_estimator_logs_one_run_per_fit(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    import numpy as np

    import mpinn

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    X = np.random.RandomState(0).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    est = mpinn.MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0, mlflow="est",
                              checkpoint=tmp_path / "ck")
    with pytest.warns(mpinn.estimators.fit.inputs.sklearn_or_own("ConvergenceWarning")):
        est.fit(X, y)
    est.partial_fit(X, y)  # not tracked
    client = mlflow.tracking.MlflowClient(store.as_uri())
    (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert found.info.run_name == "est" and found.info.status == "FINISHED"
    assert found.data.params["hidden_layer_sizes"] == "(4,)" and found.data.params["max_iter"] == "5"
    assert "mlflow" not in found.data.params and "comm" not in found.data.params
    history = sorted((m.step, m.value) for m in client.get_metric_history(found.info.run_id, "loss"))
    assert history == list(enumerate(est.loss_curve_[:5], start=1))
    assert [a.path for a in client.list_artifacts(found.info.run_id, "checkpoint")] == \
        ["checkpoint/ckpt-000005-000000.h5"]
    assert mpinn.load(tmp_path / "ck").get_params()["mlflow"] is None  # where to log is not the model's
    with pytest.raises(ValueError, match="'mlflow' parameter"):
        mpinn.MLPClassifier(mlflow=1).fit(X, y)
