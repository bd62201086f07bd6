"""One MLflow run per training job, logged by rank 0 alone (`mpinn train --mlflow`).

Where the run goes is MLflow's own rule: MLFLOW_TRACKING_URI (else MLflow's default), the
experiment from MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID (else "Default"). Those
variables never turn tracking on; only asking for it does.

Failures: starting the run is collective (``start``): rank 0 creates it and every rank gets
the outcome, so a run that cannot start is one InputError on every rank, before training.
After that only rank 0 talks to MLflow and no collective depends on it: a failure there
becomes one warning (``on_failure``) and tracking stops, while training goes on. MLflow's
own HTTP timeouts and retries bound how long a slow server can stall rank 0 (and with it, at
the next collective, the other ranks).
"""

from __future__ import annotations

import os
import time
import warnings

from mpinn.errors import InputError
from mpinn.parallel.agree import on_root

EXTRA = "mpinn[mlflow]"


class TrackingWarning(UserWarning):
    """An MLflow call failed after the run started; training went on without tracking."""


def check_available(comm, option="--mlflow"):
    """Collective: InputError on every rank when rank 0 cannot import MLflow (the other ranks
    never import it). Imported here, before any data loads, since the run will need it."""

    def importable():
        try:
            import mlflow  # noqa: F401
        except ImportError as exc:
            return _one_line(exc)
        return None

    problem = on_root(comm, importable)
    if problem:
        raise InputError(f"{option} needs MLflow ({problem}): pip install '{EXTRA}'")


def epoch_metrics(record):
    """The numbers of one epoch record (the metrics file's), keyed as there; lists and None left out."""
    return {k: float(v) for k, v in record.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _experiment_id(client):
    """MLflow's rule: MLFLOW_EXPERIMENT_ID, else MLFLOW_EXPERIMENT_NAME (made if new), else "0" (Default)."""
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if not name:
        return "0"
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def _one_line(exc):
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


class MlflowTracker:
    """Rank 0's MLflow run; on other ranks every method but ``start`` does nothing."""

    def __init__(self, comm, run_name=None, on_failure=None, option="--mlflow"):
        self.comm, self.run_name, self.option = comm, run_name, option
        self.on_failure = on_failure or (lambda message: warnings.warn(message, TrackingWarning, stacklevel=2))
        self.client = self.run_id = None
        self.active = False

    def start(self, params, tags=None):
        """Collective: rank 0 creates the run and logs ``params``; InputError on every rank if it cannot."""

        def create():
            from mlflow import get_tracking_uri
            from mlflow.entities import Param, RunTag
            from mlflow.tracking import MlflowClient

            try:
                client = MlflowClient()
                run = client.create_run(_experiment_id(client), run_name=self.run_name,
                                        tags={"mlflow.source.name": "mpinn", **(tags or {})})
                client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items() if v is not None],
                                 tags=[RunTag("mpinn.ranks", str(self.comm.size))])
            except Exception as exc:  # noqa: BLE001 - MLflow's own exceptions, made one line
                raise InputError(f"{self.option}: no MLflow run at {get_tracking_uri()}: {_one_line(exc)}") from exc
            self.client = client
            return run.info.run_id

        self.run_id = on_root(self.comm, create)
        self.active = self.comm.rank == 0

    def _guard(self, what, call):
        """Rank 0: ``call()``; a failure is one warning and the end of tracking, never an exception."""
        if not self.active:
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - tracking must not stop training
            self.active = False
            self.on_failure(f"MLflow: {what} failed ({_one_line(exc)}); tracking stopped, training goes on")

    def log_epoch(self, record):
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, record["epoch"]) for k, v in epoch_metrics(record).items()]
        self._guard(f"logging epoch {record['epoch']}", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def log_checkpoint(self, path):
        self._guard(f"logging the checkpoint {path}",
                    lambda: self.client.log_artifact(self.run_id, path, artifact_path="checkpoint"))

    def end(self, status="FINISHED"):
        """Rank 0: mark the run FINISHED, KILLED (preempted) or FAILED."""
        self._guard("ending the run", lambda: self.client.set_terminated(self.run_id, status))
        self.active = False
