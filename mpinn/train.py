"""The training loop: the one place that joins data, model, optimizer and communication.

Every step, each rank computes the loss and gradient SUMS over the rows of the global batch it
owns (none is fine), packs [gradient | loss | weight] into one flat buffer, and one in-place
Allreduce adds the buffers of all ranks. Every rank then holds the full-batch sums and applies
the same update, so the parameters stay identical with no further communication. Stopping
rules follow scikit-learn; rank 0 makes each decision and broadcasts it.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from . import metrics as metricsmod
from .data import BatchSchedule, resolve_batch_size
from .faults import FAULT_ENV, Preemption, inject, parse_faults
from .logs import MetricsWriter
from .errors import InputError
from .fitted import class_index
from .model import MLP, encode_targets
from .optim import make_optimizer
from .problem import labels_as_classes


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


def evaluate(model, params, problem, X, y, comm):
    """Metrics over the rows every rank holds; the same numbers whatever the rank count.

    Classification reduces a confusion matrix (integer counts), regression reduces sums in two
    passes (mean first, so R2 does not cancel catastrophically). Result valid on rank 0.
    """
    scores = model.forward(params, X) if len(X) else np.zeros((0, model.layer_sizes[-1]), model.dtype)
    if problem.task == "classify":
        k = len(problem.classes)
        truth = np.searchsorted(problem.classes, labels_as_classes(y, problem.classes))
        cm = metricsmod.confusion_counts(truth, class_index(scores), k)
        comm.reduce_sum_to_root(cm)
        labels = problem.class_names if problem.class_names and len(problem.class_names) == k else problem.classes.tolist()
        return metricsmod.classification_report(cm, labels) if comm.rank == 0 else None
    yv = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    first = comm.allreduce(metricsmod.regression_first_pass(yv), "sum")
    mean = first[1:] / max(first[0], 1)
    second = comm.reduce_sum_to_root(metricsmod.regression_second_pass(yv, scores.astype(np.float64), mean))
    return metricsmod.regression_report(first, second) if comm.rank == 0 else None


class Trainer:
    """Holds the model state on every rank and runs epochs in lockstep."""

    def __init__(self, cfg, problem, comm, *, log=print, log_every=1, checkpointer=None,
                 model=None, params=None, random_state=None, optimizer=None):
        """The optional model, params, random_state and optimizer let the estimators pass their
        own (warm start, partial_fit, sklearn's draw order); by default they are made here."""
        self.cfg, self.problem, self.comm, self.log = cfg, problem, comm, log
        self.log_every = log_every
        self.checkpointer = checkpointer
        self.model = model if model is not None else build_model(problem, cfg)
        # One RandomState for init and per-epoch shuffles, drawn in sklearn's order.
        self.random_state = random_state if random_state is not None else np.random.RandomState(cfg.seed)
        if params is None:
            self.params = self.model.init_params(self.random_state)
            comm.bcast_array(self.params)  # rank 0's draw is the one every rank uses
        else:
            self.params = params
        if optimizer is not None or cfg.solver == "lbfgs":
            self.optimizer = optimizer  # lbfgs: scipy's, see fit_lbfgs
        else:
            self.optimizer = make_optimizer(
                cfg.solver, self.model.n_params, cfg.dtype, lr=cfg.lr, momentum=cfg.momentum,
                nesterov=cfg.nesterov, schedule=cfg.lr_schedule, power_t=cfg.power_t,
                beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon)
        self.n_train = len(problem.train_rows)
        self.batch_size = resolve_batch_size(cfg.batch_size, self.n_train)
        self.schedule = BatchSchedule(problem.train_rows, self.batch_size, cfg.shuffle,
                                      self.random_state, problem.shard, local_seed=cfg.seed,
                                      stream=getattr(problem, "stream", None))
        # Targets in output space, so a step only gathers rows. Class targets are kept as
        # small integer codes and one-hot / 0-1 encoded per batch (EncodedRows: the same
        # values as encode_targets, without k floats per row in memory).
        if problem.Y is not None:
            self.Y = problem.Y
        elif self.model.output in ("softmax", "logistic"):
            self.Y = _encoded_rows(problem, self.model)
        else:
            self.Y = encode_targets(problem.y, problem.classes, self.model.output, self.model.dtype)
        self.epoch = 0
        self.t = 0  # samples seen, as sklearn's t_
        self.loss_curve = []
        self.history = []
        self.best_loss = np.inf
        self.no_improvement = 0
        self.finished = None        # why training ended, once it has (kept across resume)
        self.step_in_epoch = 0      # steps done in the current, unfinished epoch
        self.accumulated = 0.0      # its loss so far (sklearn's accumulated_loss)
        self.global_step = 0
        self.faults = parse_faults(os.environ.get(FAULT_ENV), comm.rank)
        n = self.model.n_params
        # [gradient | loss sum | weight sum | preemption flag]: one Allreduce carries them all,
        # so every rank learns at the same step that some rank was asked to stop.
        self.buffer = np.zeros(n + 3, dtype=self.model.dtype)
        self.grad = self.buffer[:n]
        self._ybuf = np.empty((0, self.Y.shape[1]), dtype=self.model.dtype)
        self._rows_capacity = 0  # rows the model's workspace was last sized for (step)
        self._wbuf = np.empty(0, dtype=self.model.dtype)
        # Early stopping (the estimators): sklearn's rule on a validation score instead of the
        # training loss, and the best parameters restored at the end.
        self.early_stopping = problem.val_X is not None
        self.validation_scores = []
        self.validation_loss_curve = []
        self.best_validation_score = -np.inf
        self.best_params = None
        self.format_line = _epoch_line  # the estimators print sklearn's verbose lines
        self.progress = None  # rank 0 on a terminal: called as progress(epoch, step, n_steps)
        self.extra_state = None         # callable -> JSON dict stored in checkpoints (estimators)
        # overlap=True: each layer's gradient slice is reduced with a non-blocking Iallreduce
        # started as soon as backward has produced it (last layer first), all waited for
        # before the update. Same sums, each element reduced once. Off by default: on the
        # 2-core machine measured (docs/performance.md) it did not beat the single Allreduce.
        self.overlap = False
        self._parts = None
        # Seconds this epoch spent gathering rows, computing (forward, backward, update) and
        # in the gradient reduction; fit() reports the max over ranks of each.
        self.timing = np.zeros(3)

    # ---- one step and one epoch -------------------------------------------------------

    def step(self, local_rows):
        """One optimizer step on the global batch; returns (loss, weight, stop requested)."""
        t0 = time.perf_counter()
        m, n = len(local_rows), self.model.n_params
        if m > self._rows_capacity:
            # Grow the model's workspace with 1/8 headroom (at most the batch size): a rank's
            # share of a global batch varies from step to step, and growing to each new
            # maximum would reallocate every workspace array again and again.
            self._rows_capacity = min(max(m, -(-m * 9 // 8)), max(m, self.batch_size))
        xb = self.model.input_buffer(self._rows_capacity)[:m]
        np.take(self.problem.X, local_rows, axis=0, out=xb)
        if self._ybuf.shape[0] < m:
            self._ybuf = np.empty((m, self.Y.shape[1]), dtype=self.model.dtype)
        yb = self._ybuf[:m]
        np.take(self.Y, local_rows, axis=0, out=yb)
        sw = None
        if self.problem.sample_weight is not None:
            if self._wbuf.shape[0] < m:
                self._wbuf = np.empty(m, dtype=self.model.dtype)
            sw = self._wbuf[:m]
            np.take(self.problem.sample_weight, local_rows, out=sw)
        t1 = time.perf_counter()
        if self.overlap:
            comm_seconds = self._overlapped_sums(xb, yb, sw, m)
            t3 = time.perf_counter()
            t2 = t3 - comm_seconds
        else:
            self.buffer[n] = self.model.loss_grad_sum(self.params, xb, yb, self.grad, sw)
            self.buffer[n + 1] = m if sw is None else sw.sum()
            self.global_step += 1
            if self.global_step in self.faults:
                inject(self.faults[self.global_step], self.comm.rank, self.global_step, self.grad)
            self.buffer[n + 2] = 1.0 if Preemption.requested else 0.0
            t2 = time.perf_counter()
            self.comm.allreduce_sum(self.buffer)  # the one collective per step
            t3 = time.perf_counter()
        weight = float(self.buffer[n + 1])
        alpha = self.cfg.alpha
        loss = float(self.buffer[n]) / weight
        if alpha:
            loss += (0.5 * alpha) * self.model.penalty(self.params) / weight
        self.model.finish_gradient(self.params, self.grad, alpha, weight)
        self.optimizer.step(self.params, self.grad)
        t4 = time.perf_counter()
        timing = self.timing
        timing[0] += t1 - t0
        timing[1] += (t2 - t1) + (t4 - t3)
        timing[2] += t3 - t2
        return loss, weight, self.buffer[n + 2] > 0

    def _overlapped_sums(self, xb, yb, sw, m):
        """loss_grad_sum with each layer's slice of [gradient | loss | weight | flag] reduced
        by its own Iallreduce as soon as it is final; returns the seconds spent in MPI calls.

        The last layer's slice runs to the end of the buffer, so the scalars travel with it;
        the slices partition the buffer, so every element is summed exactly once.
        """
        n, buf, comm = self.model.n_params, self.buffer, self.comm
        if self._parts is None:
            bounds = [s for s, _, _ in self.model.offsets] + [n + 3]
            self._parts = [buf[bounds[i]:bounds[i + 1]] for i in range(self.model.n_layers)]
        last = self.model.n_layers - 1
        requests = []
        spent = 0.0

        def on_grad(layer, loss):
            nonlocal spent
            if layer == last:
                buf[n] = loss
                buf[n + 1] = m if sw is None else sw.sum()
                self.global_step += 1
                if self.global_step in self.faults:
                    inject(self.faults[self.global_step], comm.rank, self.global_step, self.grad)
                buf[n + 2] = 1.0 if Preemption.requested else 0.0
            t = time.perf_counter()
            comm.progress(requests)
            req = comm.start_allreduce_sum(self._parts[layer])
            if req is not None:
                requests.append(req)
            spent += time.perf_counter() - t

        self.model.loss_grad_sum(self.params, xb, yb, self.grad, sw, on_grad=on_grad)
        t = time.perf_counter()
        comm.wait_all(requests)
        comm.allreduce_calls += 1  # one (split) gradient reduction per step
        return spent + time.perf_counter() - t

    def run_epoch(self):
        """Run the rest of the current epoch: (its loss or None if stopped part-way, stop flag).

        A preemption seen at a step ends the epoch there; seen at its last step, the epoch
        completes and the flag tells the caller to stop after it.
        """
        stop = False
        for local_rows in self.schedule.epoch(self.epoch, self.step_in_epoch):
            loss, weight, stop = self.step(local_rows)
            if self.problem.sample_weight is not None:
                # sklearn weighs each batch loss by its row count, not its sample weight.
                weight = min(self.batch_size, self.n_train - self.step_in_epoch * self.batch_size)
            self.accumulated += loss * weight
            self.step_in_epoch += 1
            if self.progress is not None:
                self.progress(self.epoch + 1, self.step_in_epoch, self.schedule.n_steps)
            if stop and self.step_in_epoch < self.schedule.n_steps:
                return None, True
        loss = self.accumulated / self.n_train
        self.accumulated, self.step_in_epoch = 0.0, 0
        self.epoch += 1
        self.t += self.n_train
        return loss, stop

    # ---- the loop ---------------------------------------------------------------------

    def _stop_reason(self, loss, score=None):
        """sklearn's rule on the training loss (or, with early stopping, on the validation
        ``score``), plus --loss-target and max epochs (rank 0)."""
        cfg = self.cfg
        if not math.isfinite(loss) or not np.isfinite(self.params).all():
            return "diverged"
        if cfg.loss_target is not None and loss <= cfg.loss_target:
            return "loss_target"
        if self.early_stopping:
            if score < self.best_validation_score + cfg.tol:
                self.no_improvement += 1
            else:
                self.no_improvement = 0
            if score > self.best_validation_score:
                self.best_validation_score = score
                self.best_params = self.params.copy()
        else:
            if loss > self.best_loss - cfg.tol:
                self.no_improvement += 1
            else:
                self.no_improvement = 0
            self.best_loss = min(self.best_loss, loss)
        self.optimizer.epoch_end(self.t)
        if self.no_improvement > cfg.n_iter_no_change:
            if self.optimizer.trigger_stopping():
                return "converged"
            self.no_improvement = 0
        if self.epoch >= cfg.epochs:
            return "max_epochs"
        return None

    def fit(self):
        cfg, comm = self.cfg, self.comm
        # A resumed run appends to the metrics of the run it continues.
        metrics_file = MetricsWriter(cfg.metrics, append=self.epoch > 0) if cfg.metrics and comm.rank == 0 else None
        start = time.perf_counter()
        self._first_epoch = self.epoch
        train_seconds = 0.0
        # A resumed run that had already finished stays finished (unless --epochs grew).
        reason = self.finished if self.finished and (self.finished != "max_epochs" or self.epoch >= cfg.epochs) else None
        if reason is None and self.epoch >= cfg.epochs:
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
                self.loss_curve.append(loss)
                breakdown = self._epoch_breakdown()  # collective
                # Every rank applies the rule so optimizer state (adaptive lr) stays equal;
                # rank 0's verdict is the one acted on.
                score = self.validate() if self.early_stopping else None  # collective
                reason = self._stop_reason(loss, score)
                reason = comm.bcast_json(reason)
                if self.early_stopping and reason not in (None, "preempted", "diverged") \
                        and self.best_params is not None:
                    self.params[...] = self.best_params  # as sklearn: end on the best validation score
                if preempted and reason is None:
                    reason = "preempted"
                record = {"epoch": self.epoch, "loss": loss, "seconds": seconds,
                          "samples_per_second": self.n_train / seconds if seconds > 0 else None,
                          "learning_rate": self.optimizer.learning_rate, **breakdown}
                if self.early_stopping:
                    record["validation_score"] = score
                    record["validation_loss"] = self.validation_loss_curve[-1]
                if self.problem.test_X is not None and reason != "diverged":
                    report = evaluate(self.model, self.params, self.problem, self.problem.test_X,
                                      self.problem.test_y, comm)
                    if comm.rank == 0:
                        record.update(_test_fields(report))
                self.history.append(record)
                if comm.rank == 0:
                    if reason or self.epoch % self.log_every == 0 or self.epoch == 1:
                        self.log(self.format_line(record))
                    if metrics_file:
                        metrics_file.write(record)
                if reason == "diverged":
                    raise TrainingDiverged(
                        f"training diverged: loss is {loss} at epoch {self.epoch}; try a smaller --lr")
                if reason not in (None, "preempted"):
                    self.finished = reason
                if reason == "preempted":
                    self._preempt()
                elif self.checkpointer and (reason or (cfg.checkpoint_every and self.epoch % cfg.checkpoint_every == 0)):
                    self.checkpointer.save(self)
        finally:
            if metrics_file:
                metrics_file.close()
        self.stop_reason = reason
        self.train_seconds = train_seconds
        self.wall_seconds = time.perf_counter() - start
        return self

    def _epoch_breakdown(self):
        """Collective: this epoch's seconds gathering rows, computing and in the gradient
        reduction (which includes waiting for the slowest rank), each the max over ranks."""
        t = self.comm.allreduce(self.timing.copy(), "max")
        self.timing[...] = 0
        return {"data_seconds": float(t[0]), "compute_seconds": float(t[1]), "comm_seconds": float(t[2])}

    def _preempt(self):
        if self.checkpointer:
            self.checkpointer.save(self)
        if self.comm.rank == 0:
            print(f"mpinn: preempted ({Preemption.signal_name or 'signal on another rank'}) at epoch {self.epoch} "
                     f"step {self.step_in_epoch}" + ("; checkpoint written, rerun with --resume" if self.checkpointer else "; no --checkpoint"),
                  file=sys.stderr, flush=True)

    # ---- validation (early stopping) and full-batch L-BFGS (the estimators) --------------

    def validate(self):
        """Validation score as sklearn's early stopping computes it (accuracy for classifiers,
        R2 for regressors) and the mean validation loss; collective, same value on every rank."""
        from . import scoring

        p, model = self.problem, self.model
        out = model.forward(self.params, p.val_X) if len(p.val_X) else np.zeros((0, model.layer_sizes[-1]), model.dtype)
        w = p.val_weight
        head = [model.output_loss_sum(out, p.val_Y, w), len(out) if w is None else float(np.sum(w))]
        if p.task == "classify":
            buf = np.concatenate((head, scoring.accuracy_partial(out, p.val_Y, model.output, len(p.classes), w)))
            self.comm.allreduce(buf, "sum")
            score = scoring.accuracy(buf[2:])
        else:
            buf = self.comm.allreduce(np.concatenate((head, scoring.r2_first_partial(p.val_Y, w))), "sum")
            mean = buf[3:] / buf[2]
            second = self.comm.allreduce(scoring.r2_second_partial(p.val_Y, out, mean, w), "sum")
            score = scoring.r2(second)
        self.validation_scores.append(score)
        self.validation_loss_curve.append(float(buf[0] / buf[1]))
        return score

    def lbfgs_order(self):
        """Index of sklearn's packing (all W, then all b) into the flat [W0, b0, W1, b1, ...]."""
        offsets = self.model.offsets
        return np.concatenate([np.arange(s, w) for s, w, _ in offsets] + [np.arange(w, e) for _, w, e in offsets])

    def fit_lbfgs(self, max_iter, max_fun, tol, chunk_rows=65536):
        """Full-batch L-BFGS-B (scipy) on every rank; each loss/gradient evaluation sums this
        rank's training rows and joins one Allreduce, so all ranks see the same function and
        take the same steps. scipy sees sklearn's packing order, so runs match sklearn's.
        Returns scipy's OptimizeResult; the caller checkpoints (it knows the iteration count)."""
        try:
            import scipy.optimize
        except ImportError:
            raise ImportError("solver='lbfgs' needs scipy: pip install scipy") from None
        model, p, n = self.model, self.problem, self.model.n_params
        order = self.lbfgs_order()
        local = p.shard.local_positions(p.train_rows)[1]
        total = np.zeros(n + 3, dtype=model.dtype) if len(local) > chunk_rows else None
        alpha = self.cfg.alpha

        def loss_grad(x):
            self.params[order] = x
            acc = self.buffer if total is None else total  # [gradient | loss | weight | flag]
            acc[...] = 0
            for start in range(0, max(len(local), 1), chunk_rows):  # one pass even with no rows
                rows = local[start : start + chunk_rows]
                xb = model.input_buffer(len(rows))
                np.take(p.X, rows, axis=0, out=xb)
                sw = None if p.sample_weight is None else p.sample_weight[rows]
                acc[n] += model.loss_grad_sum(self.params, xb, self.Y[rows], self.grad, sw)
                acc[n + 1] += len(rows) if sw is None else sw.sum()
                if total is not None:
                    total[:n] += self.grad
            if total is not None:
                self.buffer[...] = total
            self.comm.allreduce_sum(self.buffer)
            weight = float(self.buffer[n + 1])
            value = float(self.buffer[n]) / weight
            if alpha:
                value += (0.5 * alpha) * model.penalty(self.params) / weight
            model.finish_gradient(self.params, self.grad, alpha, weight)
            return value, self.grad[order]

        result = scipy.optimize.minimize(loss_grad, self.params[order], method="L-BFGS-B", jac=True,
                                         options={"maxfun": max_fun, "maxiter": max_iter, "gtol": tol})
        self.params[order] = result.x
        # Ranks ran identical iterations; rank 0's result is the one kept, bit for bit.
        self.comm.bcast_array(self.params)
        return result

    # ---- checkpoint state ---------------------------------------------------------------

    def state(self):
        """(JSON scalars, arrays) that make a resumed run continue bit for bit."""
        opt_scalars, opt_arrays = self.optimizer.state() if self.optimizer else ({}, {})
        kind, key, pos, has_gauss, gauss = self.random_state.get_state()
        scalars = {"epoch": self.epoch, "t": self.t, "step_in_epoch": self.step_in_epoch,
                   "accumulated": self.accumulated, "global_step": self.global_step,
                   "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
                   "no_improvement": self.no_improvement, "optimizer": opt_scalars, "finished": self.finished,
                   "rng": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
                   "history": self.history, "n_train": self.n_train}
        arrays = {"params": self.params, "schedule/order": self.schedule.state()["order"], "rng/key": key,
                  "loss_curve": np.asarray(self.loss_curve, dtype=np.float64),
                  **{f"optimizer/{k}": v for k, v in opt_arrays.items()}}
        if self.extra_state is not None:
            scalars["estimator"] = self.extra_state()
        return scalars, arrays

    def restore(self, scalars, arrays):
        """Continue from ``state()`` as saved by any number of ranks."""
        if scalars["n_train"] != self.n_train:
            raise InputError(f"checkpoint was trained on {scalars['n_train']} rows, this data has {self.n_train}")
        self.params[...] = arrays["params"]
        self.optimizer.load_state(scalars["optimizer"],
                                  {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("optimizer/")})
        rng = scalars["rng"]
        self.random_state.set_state((rng["kind"], arrays["rng/key"], rng["pos"], rng["has_gauss"], rng["gauss"]))
        self.schedule.load_state({"order": arrays["schedule/order"]})
        for name in ("epoch", "t", "step_in_epoch", "accumulated", "global_step", "no_improvement", "history",
                     "finished"):
            setattr(self, name, scalars[name])
        self.best_loss = np.inf if scalars["best_loss"] is None else scalars["best_loss"]
        self.loss_curve = arrays["loss_curve"].tolist()

    def summary(self):
        """The end-of-run record rank 0 prints with --json."""
        last = self.history[-1] if self.history else {}
        out = {"epochs": self.epoch, "final_loss": self.loss_curve[-1] if self.loss_curve else None,
               "stop_reason": self.stop_reason,
               "train_seconds": self.train_seconds,
               "samples_per_second": (self.n_train * (self.epoch - self._first_epoch) / self.train_seconds
                                      if self.train_seconds else None),
               "ranks": self.comm.size, "task": self.problem.task,
               "checkpoint": self.checkpointer.last_path if self.checkpointer else None}
        out.update({k: v for k, v in last.items() if k.startswith("test_")})
        return out


def _encoded_rows(problem, model):
    from .stream import EncodedRows

    return EncodedRows(labels_as_classes(problem.y, problem.classes), problem.classes, model.output, model.dtype)


def _test_fields(report):
    if "accuracy" in report:
        return {"test_accuracy": report["accuracy"], "test_f1_macro": report["f1_macro"],
                "test_precision_macro": report["precision_macro"], "test_recall_macro": report["recall_macro"]}
    return {"test_r2": report["r2"], "test_mse": report["mse"], "test_mae": report["mae"]}


def _epoch_line(r):
    test = ""
    if "test_accuracy" in r:
        test = f"  test_acc {r['test_accuracy']:.4f}"
    elif "test_r2" in r:
        test = f"  test_r2 {r['test_r2']:.4f}"
    rate = r["samples_per_second"]
    parts = ""
    if "compute_seconds" in r:
        parts = f" (compute {r['compute_seconds']:.3f}s, comm {r['comm_seconds']:.3f}s, data {r['data_seconds']:.3f}s)"
    return (f"epoch {r['epoch']:5d}  loss {r['loss']:.6f}{test}  {r['seconds']:.3f}s"
            f"  {rate:,.0f} samples/s{parts}" if rate else f"epoch {r['epoch']:5d}  loss {r['loss']:.6f}{test}")
