"""The training loop: the one place that joins data, model, step strategy and stopping rules.

Every step, each rank computes the loss and gradient SUMS over the rows of the global batch it
owns (none is fine) and hands them to the step strategy (sync.py), which combines them across
ranks and applies the optimizer update; every rank ends the step with the same parameters.
The loop sequences steps, epochs, stopping (scikit-learn's rules; rank 0 decides and
broadcasts), evaluation, logging and checkpoints. Its state is one LoopState, which the
estimators pass in and read back.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import numpy as np

from .data import BatchSchedule, global_batch, resolve_batch_size
from .errors import InputError
from .evaluation import evaluate, test_fields
from .faults import Preemption, inject
from .logs import MetricsWriter, epoch_line
from .model import MLP, encode_targets
from .problem import labels_as_classes
from .sync import make_sync

__all__ = ["LoopState", "Trainer", "TrainingDiverged", "build_model", "evaluate"]


class TrainingDiverged(RuntimeError):
    exit_code = 3


def build_model(problem, cfg):
    if problem.task == "classify":
        k = len(problem.classes)
        output, n_out = ("logistic", 1) if k == 2 else ("softmax", k)
    else:
        output, n_out = "identity", problem.n_outputs
    sizes = [problem.n_features, *cfg.hidden, n_out]
    return MLP(sizes, activation=cfg.activation, output=output, dtype=cfg.dtype)


@dataclasses.dataclass
class LoopState:
    """Everything the loop advances; what a checkpoint or an estimator carries across runs."""

    epoch: int = 0
    t: int = 0                    # samples seen, as sklearn's t_
    step_in_epoch: int = 0        # steps done in the current, unfinished epoch
    accumulated: float = 0.0      # that epoch's loss so far (sklearn's accumulated_loss)
    global_step: int = 0          # steps over the whole run, resumed parts included
    loss_curve: list = dataclasses.field(default_factory=list)
    history: list = dataclasses.field(default_factory=list)
    best_loss: float = math.inf
    no_improvement: int = 0
    finished: str | None = None   # why training ended, once it has (kept across resume)
    validation_scores: list = dataclasses.field(default_factory=list)
    validation_loss_curve: list = dataclasses.field(default_factory=list)
    best_validation_score: float = -math.inf
    best_params: np.ndarray | None = None  # early stopping: restored at the end

    SCALARS = ("epoch", "t", "step_in_epoch", "accumulated", "global_step", "no_improvement", "finished",
               "history")


class Trainer:
    """Holds the model state on every rank and runs epochs in lockstep."""

    def __init__(self, cfg, problem, comm, *, log=print, log_every=1, checkpointer=None, model=None,
                 params=None, random_state=None, optimizer=None, loop=None, format_line=epoch_line,
                 extra_state=None, progress=None, sync=None, faults=None):
        """The optional model, params, random_state, optimizer and loop let the estimators pass
        their own (warm start, partial_fit, sklearn's draw order); by default they are made here.
        ``sync`` overrides cfg.sync (e.g. 'overlap', a benchmark option). ``faults`` maps a
        global step to the fault this rank injects there (faults.parse_faults; tests only)."""
        self.cfg, self.problem, self.comm, self.log = cfg, problem, comm, log
        self.log_every, self.checkpointer = log_every, checkpointer
        self.format_line = format_line  # the estimators print sklearn's verbose lines
        self.extra_state = extra_state  # callable -> JSON dict stored in checkpoints (estimators)
        self.progress = progress        # rank 0 on a terminal: progress(epoch, step, n_steps)
        self.model = model if model is not None else build_model(problem, cfg)
        # One RandomState for init and per-epoch shuffles, drawn in sklearn's order.
        self.random_state = random_state if random_state is not None else np.random.RandomState(cfg.seed)
        if params is None:
            params = self.model.init_params(self.random_state)
            comm.bcast_array(params)  # rank 0's draw is the one every rank uses
        self.loop = loop if loop is not None else LoopState()
        self.n_train = len(problem.train_rows)
        self.batch_size = resolve_batch_size(global_batch(cfg, comm.size), self.n_train)
        if cfg.solver == "lbfgs":  # scipy's optimizer, see lbfgs.py
            self.sync, self.params, self.optimizer = None, params, None
        else:
            self.sync = make_sync(sync or cfg.sync, comm, self.model, params, cfg, optimizer)
            self.params, self.optimizer = self.sync.params, self.sync.optimizer
        self.schedule = BatchSchedule(problem.train_rows, self.batch_size, cfg.shuffle, self.random_state,
                                      problem.shard, local_seed=cfg.seed, stream=getattr(problem, "stream", None))
        # Targets in output space, so a step only gathers rows. Class targets are kept as
        # small integer codes and one-hot / 0-1 encoded per batch (EncodedRows).
        if problem.Y is not None:
            self.Y = problem.Y
        elif self.model.output in ("softmax", "logistic"):
            self.Y = _encoded_rows(problem, self.model)
        else:
            self.Y = encode_targets(problem.y, problem.classes, self.model.output, self.model.dtype)
        self.faults = faults or {}
        self.early_stopping = problem.val_X is not None
        self._ybuf = np.empty((0, self.Y.shape[1]), dtype=self.model.dtype)
        self._wbuf = np.empty(0, dtype=self.model.dtype)
        self._rows_capacity = 0  # rows the model's workspace was last sized for
        # Seconds this epoch spent gathering rows, computing (forward, backward, update) and
        # communicating; fit() reports the max over ranks of each.
        self.timing = np.zeros(3)
        self.stop_reason = None

    # Read-only views of the loop state (tests, summaries).
    epoch = property(lambda self: self.loop.epoch)
    t = property(lambda self: self.loop.t)
    step_in_epoch = property(lambda self: self.loop.step_in_epoch)
    loss_curve = property(lambda self: self.loop.loss_curve)
    history = property(lambda self: self.loop.history)

    # ---- one step and one epoch -------------------------------------------------------

    def _inject_and_flag(self, grad):
        loop = self.loop
        loop.global_step += 1
        if loop.global_step in self.faults:
            inject(self.faults[loop.global_step], self.comm.rank, loop.global_step, grad)
        return 1.0 if Preemption.requested else 0.0

    def step(self, local_rows):
        """One optimizer step on the global batch; returns (loss, weight, stop requested)."""
        t0 = time.perf_counter()
        m = len(local_rows)
        if m > self._rows_capacity:
            # Grow the model's workspace with 1/8 headroom (at most the batch size): a rank's
            # share of a global batch varies from step to step.
            self._rows_capacity = min(max(m, -(-m * 9 // 8)), max(m, self.batch_size))
        xb = self.model.input_buffer(self._rows_capacity)[:m]
        np.take(self.problem.X, local_rows, axis=0, out=xb)
        if self._ybuf.shape[0] < m:
            self._ybuf = np.empty((m, self.Y.shape[1]), dtype=self.model.dtype)
        yb = self._ybuf[:m]
        np.take(self.Y, local_rows, axis=0, out=yb)
        sw, weight = None, m
        if self.problem.sample_weight is not None:
            if self._wbuf.shape[0] < m:
                self._wbuf = np.empty(m, dtype=self.model.dtype)
            sw = self._wbuf[:m]
            np.take(self.problem.sample_weight, local_rows, out=sw)
            weight = sw.sum()
        if self.cfg.warmup_epochs:
            done = self.loop.epoch * self.schedule.n_steps + self.loop.step_in_epoch + 1
            self.optimizer.warmup_factor = min(1.0, done / (self.cfg.warmup_epochs * self.schedule.n_steps))
        t1 = time.perf_counter()
        comm_before = self.sync.comm_seconds
        loss_sum, weight, penalty, stop = self.sync.step(xb, yb, sw, weight, self._inject_and_flag)
        t2 = time.perf_counter()
        loss = loss_sum / weight
        if self.cfg.alpha:
            loss += (0.5 * self.cfg.alpha) * penalty / weight
        comm_seconds = self.sync.comm_seconds - comm_before
        timing = self.timing
        timing[0] += t1 - t0
        timing[1] += t2 - t1 - comm_seconds
        timing[2] += comm_seconds
        return loss, weight, stop

    def run_epoch(self):
        """Run the rest of the current epoch: (its loss or None if stopped part-way, stop flag).

        A preemption seen at a step ends the epoch there; seen at its last step, the epoch
        completes and the flag tells the caller to stop after it.
        """
        loop, stop = self.loop, False
        for local_rows in self.schedule.epoch(loop.epoch, loop.step_in_epoch):
            loss, weight, stop = self.step(local_rows)
            if self.problem.sample_weight is not None:
                # sklearn weighs each batch loss by its row count, not its sample weight.
                weight = min(self.batch_size, self.n_train - loop.step_in_epoch * self.batch_size)
            loop.accumulated += loss * weight
            loop.step_in_epoch += 1
            if self.progress is not None:
                self.progress(loop.epoch + 1, loop.step_in_epoch, self.schedule.n_steps)
            if stop and loop.step_in_epoch < self.schedule.n_steps:
                return None, True
        loss = loop.accumulated / self.n_train
        loop.accumulated, loop.step_in_epoch = 0.0, 0
        loop.epoch += 1
        loop.t += self.n_train
        return loss, stop

    # ---- stopping ---------------------------------------------------------------------

    def _update_no_improvement(self, loss, score):
        """End-of-epoch bookkeeping of sklearn's rule (counters, best loss or best validation
        parameters, the optimizer's schedule); True when it says training has converged."""
        loop, cfg = self.loop, self.cfg
        if self.early_stopping:
            loop.no_improvement = loop.no_improvement + 1 if score < loop.best_validation_score + cfg.tol else 0
            if score > loop.best_validation_score:
                loop.best_validation_score = score
                loop.best_params = self.params.copy()
        else:
            loop.no_improvement = loop.no_improvement + 1 if loss > loop.best_loss - cfg.tol else 0
            loop.best_loss = min(loop.best_loss, loss)
        self.optimizer.epoch_end(loop.t)
        if loop.no_improvement > cfg.n_iter_no_change:
            if self.optimizer.trigger_stopping():
                return True
            loop.no_improvement = 0
        return False

    def _epoch_verdict(self, loss, score=None):
        """Why training stops after this epoch, or None: divergence, --loss-target, sklearn's
        no-improvement rule (on the training loss, or the validation score), max epochs."""
        cfg = self.cfg
        if not math.isfinite(loss) or not np.isfinite(self.params).all():
            return "diverged"
        if cfg.loss_target is not None and loss <= cfg.loss_target:
            return "loss_target"
        if self._update_no_improvement(loss, score):
            return "converged"
        return "max_epochs" if self.loop.epoch >= cfg.epochs else None

    # ---- the loop ---------------------------------------------------------------------

    def fit(self):
        cfg, comm, loop = self.cfg, self.comm, self.loop
        # A resumed run appends to the metrics of the run it continues.
        metrics_file = MetricsWriter(cfg.metrics, append=loop.epoch > 0) if cfg.metrics and comm.rank == 0 else None
        start = time.perf_counter()
        self._first_epoch = loop.epoch
        train_seconds = 0.0
        # A resumed run that had already finished stays finished (unless --epochs grew).
        reason = loop.finished if loop.finished and (loop.finished != "max_epochs" or loop.epoch >= cfg.epochs) else None
        if reason is None and loop.epoch >= cfg.epochs:
            reason = "max_epochs"
        try:
            while reason is None:
                t0 = time.perf_counter()
                # Overflow on the way to divergence is detected and reported once, below.
                with np.errstate(over="ignore", invalid="ignore"):
                    loss, preempted = self.run_epoch()
                seconds = time.perf_counter() - t0
                train_seconds += seconds
                if loss is None:  # stopped part-way through an epoch
                    reason = "preempted"
                    self._preempt()
                    break
                loop.loss_curve.append(loss)
                breakdown = self._epoch_breakdown()  # collective
                # Every rank applies the rule so optimizer state (adaptive lr) stays equal;
                # rank 0's verdict is the one acted on.
                score = self.validate() if self.early_stopping else None  # collective
                reason = comm.bcast_json(self._epoch_verdict(loss, score))
                if self.early_stopping and reason not in (None, "preempted", "diverged") \
                        and loop.best_params is not None:
                    self.params[...] = loop.best_params  # as sklearn: end on the best validation score
                if preempted and reason is None:
                    reason = "preempted"
                record = {"epoch": loop.epoch, "loss": loss, "seconds": seconds,
                          "samples_per_second": self.n_train / seconds if seconds > 0 else None,
                          "learning_rate": self.optimizer.learning_rate, **breakdown}
                if self.early_stopping:
                    record["validation_score"] = score
                    record["validation_loss"] = loop.validation_loss_curve[-1]
                if self.problem.test_X is not None and reason != "diverged":
                    report = evaluate(self.model, self.params, self.problem, self.problem.test_X,
                                      self.problem.test_y, comm)
                    if comm.rank == 0:
                        record.update(test_fields(report))
                loop.history.append(record)
                if comm.rank == 0:
                    if reason or loop.epoch % self.log_every == 0 or loop.epoch == 1:
                        self.log(self.format_line(record))
                    if metrics_file:
                        metrics_file.write(record)
                if reason == "diverged":
                    raise TrainingDiverged(
                        f"training diverged: loss is {loss} at epoch {loop.epoch}; try a smaller --lr")
                if reason not in (None, "preempted"):
                    loop.finished = reason
                if reason == "preempted":
                    self._preempt()
                elif self.checkpointer and (reason or (cfg.checkpoint_every and loop.epoch % cfg.checkpoint_every == 0)):
                    self.checkpointer.save(self)
        finally:
            if metrics_file:
                metrics_file.close()
        self.stop_reason = reason
        self.train_seconds = train_seconds
        self.wall_seconds = time.perf_counter() - start
        return self

    def _epoch_breakdown(self):
        """Collective: this epoch's seconds gathering rows, computing and in the step's
        collectives (which includes waiting for the slowest rank), each the max over ranks."""
        t = self.comm.allreduce(self.timing.copy(), "max")
        self.timing[...] = 0
        return {"data_seconds": float(t[0]), "compute_seconds": float(t[1]), "comm_seconds": float(t[2])}

    def _preempt(self):
        if self.checkpointer:
            self.checkpointer.save(self)
        if self.comm.rank == 0:
            print(f"mpinn: preempted ({Preemption.signal_name or 'signal on another rank'}) at epoch "
                  f"{self.loop.epoch} step {self.loop.step_in_epoch}"
                  + ("; checkpoint written, rerun with --resume" if self.checkpointer else "; no --checkpoint"),
                  file=sys.stderr, flush=True)

    # ---- validation (early stopping) ------------------------------------------------------

    def validate(self):
        """Validation score as sklearn's early stopping computes it (accuracy for classifiers,
        R2 for regressors) and the mean validation loss; collective, same value on every rank."""
        from . import metrics

        p, model, loop = self.problem, self.model, self.loop
        out = model.forward(self.params, p.val_X) if len(p.val_X) else np.zeros((0, model.layer_sizes[-1]), model.dtype)
        w = p.val_weight
        head = [model.output_loss_sum(out, p.val_Y, w), len(out) if w is None else float(np.sum(w))]
        if p.task == "classify":
            buf = np.concatenate((head, metrics.accuracy_partial(out, p.val_Y, model.output, len(p.classes), w)))
            self.comm.allreduce(buf, "sum")
            score = metrics.accuracy(buf[2:])
        else:
            buf = self.comm.allreduce(np.concatenate((head, metrics.regression_first_pass(p.val_Y, w))), "sum")
            mean = buf[3:] / buf[2]
            second = self.comm.allreduce(metrics.r2_partial(p.val_Y, out, mean, w), "sum")
            score = metrics.r2(second)
        loop.validation_scores.append(score)
        loop.validation_loss_curve.append(float(buf[0] / buf[1]))
        return score

    # ---- checkpoint state ---------------------------------------------------------------

    def checkpoint_state(self):
        """Collective: (JSON scalars, arrays) that make a resumed run continue bit for bit, on
        any rank count and in either sync mode (optimizer state whole). Valid on rank 0."""
        loop = self.loop
        opt_scalars, opt_arrays = self.sync.optimizer_state() if self.sync else ({}, {})
        kind, key, pos, has_gauss, gauss = self.random_state.get_state()
        scalars = {name: getattr(loop, name) for name in LoopState.SCALARS}
        scalars.update({"best_loss": None if math.isinf(loop.best_loss) else loop.best_loss,
                        "optimizer": opt_scalars, "n_train": self.n_train, "batch_size": self.batch_size,
                        "rng": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}})
        arrays = {"params": self.params, "schedule/order": self.schedule.state()["order"], "rng/key": key,
                  "loss_curve": np.asarray(loop.loss_curve, dtype=np.float64),
                  **{f"optimizer/{k}": v for k, v in opt_arrays.items()}}
        if self.extra_state is not None:
            scalars["estimator"] = self.extra_state()
        return scalars, arrays

    def restore(self, scalars, arrays):
        """Continue from ``checkpoint_state()`` as saved by any number of ranks."""
        if scalars["n_train"] != self.n_train:
            raise InputError(f"checkpoint was trained on {scalars['n_train']} rows, this data has {self.n_train}")
        saved_batch = scalars.get("batch_size", self.batch_size)
        if scalars["step_in_epoch"] and saved_batch != self.batch_size:
            raise InputError(f"--resume: the checkpoint stopped part-way through an epoch of batches of {saved_batch}"
                             f" rows; with {self.comm.size} rank(s) the batch is {self.batch_size} (--batch-per-rank):"
                             " resume on the same rank count, or from an end-of-epoch checkpoint")
        self.params[...] = arrays["params"]
        if self.sync:
            self.sync.load_optimizer_state(scalars["optimizer"], {k.split("/", 1)[1]: v for k, v in arrays.items()
                                                                  if k.startswith("optimizer/")})
        rng = scalars["rng"]
        self.random_state.set_state((rng["kind"], arrays["rng/key"], rng["pos"], rng["has_gauss"], rng["gauss"]))
        self.schedule.load_state({"order": arrays["schedule/order"]})
        for name in LoopState.SCALARS:
            setattr(self.loop, name, scalars[name])
        self.loop.best_loss = math.inf if scalars["best_loss"] is None else scalars["best_loss"]
        self.loop.loss_curve = arrays["loss_curve"].tolist()

    def summary(self):
        """The end-of-run record rank 0 prints with --json."""
        loop = self.loop
        last = loop.history[-1] if loop.history else {}
        out = {"epochs": loop.epoch, "final_loss": loop.loss_curve[-1] if loop.loss_curve else None,
               "stop_reason": self.stop_reason, "train_seconds": self.train_seconds,
               "samples_per_second": (self.n_train * (loop.epoch - self._first_epoch) / self.train_seconds
                                      if self.train_seconds else None),
               "ranks": self.comm.size, "task": self.problem.task, "sync": self.sync.name if self.sync else None,
               "checkpoint": self.checkpointer.last_path if self.checkpointer else None}
        out.update({k: v for k, v in last.items() if k.startswith("test_")})
        return out


def _encoded_rows(problem, model):
    from .stream import EncodedRows

    return EncodedRows(labels_as_classes(problem.y, problem.classes), problem.classes, model.output, model.dtype)
