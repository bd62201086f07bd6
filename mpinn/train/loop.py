"""The training loop: the one place that joins data, model, step strategy and stopping rules.

Every step, each rank computes the loss and gradient SUMS over the rows of the global batch it
owns (none is fine) and hands them to the step strategy (parallel/sync.py), which combines them across
ranks and applies the optimizer update; every rank ends the step with the same parameters.
The loop sequences steps, epochs, stopping (scikit-learn's rules; rank 0 decides and
broadcasts), evaluation, logging and checkpoints. Its state is one LoopState (train_state.py),
which the estimators pass in and read back.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from mpinn.train import state as train_state
from mpinn.data.hdf5 import global_batch, resolve_batch_size
from mpinn.train.early_stopping import hold_out_problem, validation_score
from mpinn.train.evaluation import evaluate, test_fields
from mpinn.parallel.faults import Preemption, inject, verdict
from mpinn.train.logs import MetricsWriter, epoch_line
from mpinn.nn.model import MLP
from mpinn.options import parse_shard
from mpinn.train.problem import output_targets, reshard
from mpinn.train.rebalancing import LoadBalancing
from mpinn.data.schedule import BatchSchedule, resolve_permutation
from mpinn.parallel.sync import make_sync
from mpinn.train.config import optimizer_from_config
from mpinn.train.state import LoopState
from mpinn.train.stopping import agreed_decision

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


class Trainer:
    """Holds the model state on every rank and runs epochs in lockstep."""

    def __init__(self, cfg, problem, comm, *, log=print, log_every=1, checkpointer=None, model=None,
                 params=None, random_state=None, optimizer=None, loop=None, format_line=epoch_line,
                 extra_state=None, progress=None, sync=None, faults=None, slow=None, hold_out=False,
                 metrics_first=None, tracker=None, snapshots=None):
        """The optional model, params, random_state, optimizer and loop let the estimators pass
        their own (warm start, partial_fit, sklearn's draw order); by default they are made here.
        ``sync`` overrides cfg.sync (e.g. 'overlap', a benchmark option). ``faults`` maps a
        global step to the fault this rank injects there (faults.parse_faults; tests only).
        ``slow`` maps a rank to the factor by which it is made slower (balance.parse_slow).
        ``hold_out`` (`mpinn train --early-stopping`): hold out cfg.validation_fraction of the
        training rows as the estimators do (early_stopping.hold_out), after the initial weights.
        ``metrics_first``: the record the metrics file starts with (the CLI's resolved
        configuration). ``tracker``: rank 0's run in a tracking service (tracking.py), given
        every epoch record the metrics file gets. ``snapshots``: elastic training's in-memory
        snapshots (elastic.py), taken at the start, every few steps and at epoch ends."""
        self.cfg, self.problem, self.comm, self.log = cfg, problem, comm, log
        self.log_every, self.checkpointer = log_every, checkpointer
        self.format_line = format_line  # the estimators print sklearn's verbose lines
        self.extra_state = extra_state  # callable -> JSON dict stored in checkpoints (estimators)
        self.progress = progress        # rank 0 on a terminal: progress(epoch, step, n_steps)
        self.metrics_first, self.tracker = metrics_first, tracker
        self.model = model if model is not None else build_model(problem, cfg)
        # One RandomState for init and per-epoch shuffles, drawn in sklearn's order.
        self.random_state = random_state if random_state is not None else np.random.RandomState(cfg.seed)
        if params is None:
            params = self.model.init_params(self.random_state)
            comm.bcast_array(params)  # rank 0's draw is the one every rank uses
        if hold_out:  # drawn from the RandomState where scikit-learn draws it: after init, before shuffles
            problem = self.problem = hold_out_problem(problem, self.model, cfg.validation_fraction,
                                                      self.random_state, comm)
        self.loop = loop if loop is not None else LoopState()
        if problem.val_X is not None and self.loop.best_params is None:
            self.loop.best_params = params.copy()  # as sklearn: the initial weights until a score improves
        self.n_train = len(problem.train_rows)
        self.batch_size = resolve_batch_size(global_batch(cfg, comm.size), self.n_train)
        if cfg.solver == "lbfgs":  # scipy's optimizer, see lbfgs.py
            self.sync, self.params, self.optimizer = None, params, None
        else:
            self.sync = make_sync(sync or cfg.sync, comm, self.model, params,
                                  lambda n: optimizer_from_config(cfg, n, self.model.dtype), cfg.alpha,
                                  warmup_steps=cfg.sync_warmup_steps, optimizer=optimizer,
                                  clock=lambda: self.loop.global_step, shared_memory=snapshots is None)
            self.params, self.optimizer = self.sync.params, self.sync.optimizer
        self.schedule = self._make_schedule()
        self.problem = replace(problem, train_rows=self.schedule.train)  # this shard's view of them
        self.Y = output_targets(self.problem, self.model)
        self.faults = faults or {}
        self.snapshots = snapshots
        self.early_stopping = problem.val_X is not None
        self._ybuf = np.empty((0, self.Y.shape[1]), dtype=self.model.dtype)
        self._wbuf = np.empty(0, dtype=self.model.dtype)
        self._rows_buf = np.empty(0, dtype=np.intp)
        self._rows_capacity = 0  # rows the model's workspace was last sized for
        # Seconds this epoch spent gathering rows, computing (forward, backward, update) and
        # communicating; fit() reports the max over ranks of each.
        self.timing = np.zeros(3)
        self.stop_reason = None
        # Set when a signal stopped the run (_preempt): what happened, the exit code, checkpoint written?
        self.stop_message = self.stop_exit_code = None
        self.stop_saved = False
        # Per-step compute timing, MPINN_SLOW and, with --balance dynamic, moving rows.
        self.balancing = LoadBalancing(cfg, self.problem, comm, self.schedule.n_steps, slow or {}, self._take_shares)

    # Read-only views of the loop state (tests, summaries).
    epoch = property(lambda self: self.loop.epoch)
    t = property(lambda self: self.loop.t)
    step_in_epoch = property(lambda self: self.loop.step_in_epoch)
    loss_curve = property(lambda self: self.loop.loss_curve)
    history = property(lambda self: self.loop.history)

    # ---- one step and one epoch -------------------------------------------------------

    def _inject_and_flag(self, grad):
        """Called by the step strategy between this rank's compute and the reduction: this
        step's fault, if any (steps count from 1), and this rank's stop request."""
        self.balancing.compute_done()
        step = self.loop.global_step + 1  # the step under way; step() counts it when it is done
        if step in self.faults:
            inject(self.faults[step], self.comm.rank, step, grad)
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
        # The rows as intp in a reused buffer (np.take converts other index types into a new
        # array), taken with mode="wrap": they come from the schedule, in range by
        # construction, and the default "raise" copies ``out`` through a temporary every call.
        if self._rows_buf.shape[0] < m:
            self._rows_buf = np.empty(self._rows_capacity, dtype=np.intp)
        rows, local_rows = local_rows, self._rows_buf[:m]
        np.copyto(local_rows, rows)
        np.take(self.problem.X, local_rows, axis=0, out=xb, mode="wrap")
        if self._ybuf.shape[0] < m:
            self._ybuf = np.empty((m, self.Y.shape[1]), dtype=self.model.dtype)
        yb = self._ybuf[:m]
        np.take(self.Y, local_rows, axis=0, out=yb, mode="wrap")
        sw, weight = None, m
        if self.problem.sample_weight is not None:
            if self._wbuf.shape[0] < m:
                self._wbuf = np.empty(m, dtype=self.model.dtype)
            sw = self._wbuf[:m]
            np.take(self.problem.sample_weight, local_rows, out=sw, mode="wrap")
            weight = sw.sum()
        if self.cfg.warmup_epochs:
            done = self.loop.epoch * self.schedule.n_steps + self.loop.step_in_epoch + 1
            self.optimizer.warmup_factor = min(1.0, done / (self.cfg.warmup_epochs * self.schedule.n_steps))
        t1 = time.perf_counter()
        self.balancing.compute_starts(m, t1)
        comm_before = self.sync.comm_seconds
        batch_rows = min(self.batch_size, self.n_train - self.loop.step_in_epoch * self.batch_size)
        loss_sum, weight, penalty, stop = self.sync.step(xb, yb, sw, weight, self._inject_and_flag, batch_rows)
        t2 = time.perf_counter()
        # Counted once done: the strategy's clock (local averaging's warm-up) reads the steps before it.
        self.loop.global_step += 1
        loss = loss_sum / weight if weight else 0.0  # a local step (parallel/local_averaging.py) may have no rows here
        if self.cfg.alpha and weight:
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
        steps = self.schedule.epoch(loop.epoch, loop.step_in_epoch)
        while (local_rows := next(steps, None)) is not None:
            loss, weight, stop = self.step(local_rows)
            if self.problem.sample_weight is not None:
                # sklearn weighs each batch loss by its row count, not its sample weight.
                weight = len(local_rows) if self.sync.local else \
                    min(self.batch_size, self.n_train - loop.step_in_epoch * self.batch_size)
            # Local averaging adds the ranks' losses (and agrees on stopping) when it averages.
            before = self.sync.comm_seconds
            contribution, stop = self.sync.settle(loss * weight, stop, loop.step_in_epoch + 1 == self.schedule.n_steps)
            self.timing[2] += self.sync.comm_seconds - before
            loop.accumulated += contribution
            loop.step_in_epoch += 1
            if self.progress is not None:
                self.progress(loop.epoch + 1, loop.step_in_epoch, self.schedule.n_steps)
            if stop and loop.step_in_epoch < self.schedule.n_steps:
                return None, True
            if self.balancing.rebalance_if_due(loop.global_step, loop.step_in_epoch == self.schedule.n_steps) \
                    and loop.step_in_epoch < self.schedule.n_steps:
                # The rows changed owners: continue the epoch on the new schedule, as a resume would.
                steps = self.schedule.epoch(loop.epoch, loop.step_in_epoch)
            if self.snapshots and loop.step_in_epoch < self.schedule.n_steps and self.snapshots.due(self):
                self.snapshots.take(self, at_epoch_end=False)
        loss = loop.accumulated / self.n_train
        loop.accumulated, loop.step_in_epoch = 0.0, 0
        loop.epoch += 1
        loop.t += self.n_train
        return loss, stop

    # ---- stopping ---------------------------------------------------------------------

    def _apply(self, decision):
        """Carry out this rank's end-of-epoch decision (stopping.decide_epoch): the rule's
        counter, the best loss or validation weights, the optimizer's learning rate."""
        if not decision.counted:
            return
        loop = self.loop
        loop.no_improvement, loop.best_loss = decision.no_improvement, decision.best_loss
        loop.best_validation_score = decision.best_validation_score
        if decision.is_best:
            loop.best_params = self.params.copy()
        self.optimizer.learning_rate = decision.learning_rate

    # ---- the loop ---------------------------------------------------------------------

    def fit(self):
        cfg, comm, loop = self.cfg, self.comm, self.loop
        # A resumed run appends to the metrics of the run it continues.
        metrics_file = MetricsWriter(cfg.metrics, append=loop.epoch > 0, first=self.metrics_first) if cfg.metrics and comm.rank == 0 else None
        start = time.perf_counter()
        self._first_epoch = loop.epoch
        train_seconds = 0.0
        # A resumed run that had already finished stays finished (unless --epochs grew).
        reason = loop.finished if loop.finished and (loop.finished != "max_epochs" or loop.epoch >= cfg.epochs) else None
        if reason is None and loop.epoch >= cfg.epochs:
            reason = "max_epochs"
        if reason is None and loop.last_params is not None:
            # A finished run given more epochs ended on its best validation epoch's weights:
            # it goes on from its last epoch's, as one longer run would.
            self.params[...] = loop.last_params
        loop.last_params = None
        self._start_step = loop.global_step
        if self.snapshots and reason is None:
            self.snapshots.take(self, at_epoch_end=loop.step_in_epoch == 0)
        try:
            if 0 in self.faults:  # MPINN_FAULT step 0: a signal before the first step
                inject(self.faults[0], self.comm.rank, 0, None)
            if reason is None and self._signalled():  # e.g. while the data loaded
                reason = "preempted"
                self._preempt()
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
                self.timing[...] = 0  # the next epoch's times and moves count from zero
                self.balancing.start_epoch()
                score = self.validate() if self.early_stopping else None  # collective
                decision = agreed_decision(comm, cfg, loop, loss, score, self.params, self.optimizer,
                                           self.early_stopping)
                self._apply(decision)
                reason = decision.reason
                if self.early_stopping and reason not in (None, "preempted", "diverged") \
                        and loop.best_params is not None:
                    loop.last_params = self.params.copy()  # kept in the checkpoint, for a run given more epochs
                    self.params[...] = loop.best_params  # as sklearn: end on the best validation score
                if preempted and reason is None:
                    reason = "preempted"
                record = {"epoch": loop.epoch, "loss": loss, "seconds": seconds,
                          "samples_per_second": self.n_train / seconds if seconds > 0 else None,
                          "learning_rate": self.optimizer.learning_rate, "reductions": self.sync.take_reductions(),
                          **breakdown}
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
                    if self.tracker:
                        self.tracker.log_epoch(record)
                if reason == "diverged":
                    self.release()
                    raise TrainingDiverged(
                        f"training diverged: loss is {loss} at epoch {loop.epoch}; try a smaller --lr")
                if reason not in (None, "preempted"):
                    loop.finished = reason
                if reason == "preempted":
                    self._preempt()
                elif self.checkpointer and (reason or (cfg.checkpoint_every and loop.epoch % cfg.checkpoint_every == 0)):
                    self.checkpointer.save(self)
                if self.snapshots and reason is None:
                    self.snapshots.take(self, at_epoch_end=True)
            if reason not in ("preempted", "diverged") and self._signalled():
                # A signal after the last step's reduction (during the last evaluation or
                # checkpoint) is not dropped: the run ends as preempted, its checkpoint written.
                reason = "preempted"
                self._preempt()
        finally:
            if metrics_file:
                metrics_file.close()
        self.release()
        self.stop_reason = reason
        self.train_seconds = train_seconds
        self.wall_seconds = time.perf_counter() - start
        return self

    def release(self):  # collective: shared parameter memory (--sync shm) copied out and freed
        self.params = self.sync.release() if self.sync else self.params

    def _epoch_breakdown(self):
        """Collective: this epoch's seconds gathering rows, computing and in the step's
        collectives (which includes waiting for the slowest rank), each the max over ranks,
        and the per-rank fields of load balancing (rebalancing.py)."""
        per_rank = np.zeros(3 + self.balancing.n_slots)
        per_rank[:3] = self.timing
        self.balancing.fill_slots(per_rank[3:], self.problem.shard.count)
        t = self.comm.allreduce(per_rank, "max")
        out = {"data_seconds": float(t[0]), "compute_seconds": float(t[1]), "comm_seconds": float(t[2])}
        out.update(self.balancing.epoch_fields(t[3:]))
        return out

    # ---- the rows this rank owns ------------------------------------------------------------

    def _take_shares(self, shares):
        """Move the rows (rebalancing.py): this rank re-reads its shard under ``shares`` from
        the file (measured against exchanging them in bench/balance.py), then the schedule is
        rebuilt at the same place of the same epoch, so the global batches do not change."""
        state = self.schedule.state()
        scalars = self.schedule.scalars() if hasattr(self.schedule, "scalars") else None
        self.problem = reshard(self.problem, self.cfg, self.comm, shares)
        self.Y = output_targets(self.problem, self.model)
        self.schedule = self._make_schedule()
        self.problem = replace(self.problem, train_rows=self.schedule.train)
        self.schedule.load_state(state, *([] if scalars is None else [scalars]))

    def _make_schedule(self):
        """The batch schedule over this rank's current shard (rebuilt when the rows move); its
        ``train`` is this shard's view of the training rows, which the caller keeps."""
        p, cfg = self.problem, self.cfg
        return BatchSchedule(p.train_rows, self.batch_size, cfg.shuffle, self.random_state, p.shard,
                             local_seed=cfg.seed, stream=getattr(p, "stream", None),
                             permutation=resolve_permutation(getattr(cfg, "permutation", "auto"), p.shard.n_rows),
                             shard_spec=str(parse_shard(cfg.shard)))

    def _signalled(self):
        """Collective: did a rank get a signal outside a step's reduction (which otherwise
        carries the flag): before the first step, or after the last one?"""
        return self.comm.allreduce(np.array([float(Preemption.requested)]), "max")[0] > 0

    def _preempt(self):
        """Collective: agree on what stopped the run, checkpoint what this run trained, and keep
        the account in ``stop_message`` (the CLI prints it, an estimator raises it)."""
        self.stop_exit_code, word, names = verdict(self.comm.allreduce(np.array(Preemption.received()), "sum"))
        trained = self.loop.global_step > self._start_step
        if self.checkpointer and trained:
            self.checkpointer.save(self)
        self.stop_saved = bool(self.checkpointer) and trained
        where = f"at epoch {self.loop.epoch} step {self.loop.step_in_epoch}" if trained else "before the first step"
        self.stop_message = f"{word} ({names}) {where}"

    def note_in_metrics(self, name, record):
        """Add ``record`` under ``name`` to the record the metrics file starts with (an elastic
        recovery's `rank_lost`: cli/elastic.py); written when fit opens the file."""
        self.metrics_first = {**(self.metrics_first or {}), name: record}

    def stop_below_min_ranks(self, min_ranks, exit_code):
        """Collective (elastic training): too few ranks are left to go on; checkpoint where the
        survivors stand and keep the account, as a preemption does."""
        if self.checkpointer:
            self.checkpointer.save(self)
        self.stop_reason, self.stop_exit_code, self.stop_saved = "below_min_ranks", exit_code, bool(self.checkpointer)
        self.stop_message = (f"{self.comm.size} rank(s) left, fewer than --min-ranks {min_ranks}: stopped at epoch "
                             f"{self.epoch} step {self.step_in_epoch}")
        self.problem.close()

    # ---- validation (early stopping) ------------------------------------------------------

    def validate(self):
        """Validation score (early_stopping.validation_score; collective), recorded in the loop."""
        score, loss = validation_score(self.model, self.params, self.problem, self.comm)
        self.loop.validation_scores.append(score)
        self.loop.validation_loss_curve.append(loss)
        return score

    # ---- checkpoint state (train_state.py) ---------------------------------------------

    def checkpoint_state(self, everywhere=False):
        """Collective: (JSON scalars, arrays) that make a resumed run continue bit for bit, on
        any rank count and in either sync mode (optimizer state whole). Valid on rank 0, or on
        every rank with ``everywhere``."""
        return train_state.checkpoint_state(self.loop, extra_state=self.extra_state, everywhere=everywhere,
                                            **self._stored_parts())

    def restore(self, scalars, arrays):
        """Continue from ``checkpoint_state()`` as saved by any number of ranks."""
        train_state.restore(self.loop, scalars, arrays, ranks=self.comm.size, **self._stored_parts())

    def _stored_parts(self):
        """What train/state.py stores and restores besides the loop's counters."""
        return dict(params=self.params, sync=self.sync, random_state=self.random_state, schedule=self.schedule,
                    balancing=self.balancing, n_train=self.n_train, batch_size=self.batch_size,
                    early_stopping=self.early_stopping)

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
        if self.snapshots:
            out["snapshot_seconds"] = self.snapshots.seconds
        out.update({k: v for k, v in last.items() if k.startswith("test_")})
        return out
