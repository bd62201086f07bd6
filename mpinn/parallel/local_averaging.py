"""Model averaging (local SGD, `--sync local:K`): each rank steps alone, the ranks average every K steps.

Each rank takes its own rows of every global batch (the same global batches as the other
strategies) and applies the optimizer to its own copy of the model with the gradient of its
local objective: the mean over its rows plus the global step's L2 term (alpha * W / batch
rows: the rank's share of alpha * W, divided by its rows). No collective runs on such a step.
After K local steps, and at the last step of every epoch, one Allreduce of

    [w*params | w*optimizer arrays (Adam m and v, SGD velocity) | w | stop flag | L, S, P of each step since]

replaces every rank's parameters and optimizer state by their average weighted by w, the rows
(or sample weight) the rank stepped on since the previous average (FedAvg's weighting: a rank
without rows, or whose rows all weigh 0, has no say). With plain or momentum SGD and K = 1 this
is exactly the allreduce update (the update is linear in the gradient; with sample weights and
alpha > 0 less the L2 share of a rank whose rows all weigh 0, which does not step); with Adam,
or K > 1, it is another algorithm, and its result depends on the number of ranks.

A window in which every row weighs 0 (w sums to 0) leaves the models as they are: no rank
stepped, so each still holds the last average, and 0/0 would make them NaN. Adam's step count
grows by the steps on which some rank stepped.

The loss: the loop can only weigh a rank's own mean, m_r * L_r / S_r, which is not the batch's
share once weights differ across ranks (and the epoch loss drives n_iter_no_change). So each
rank sends, per step of the window, its weighted loss sum L, weight S and L2 share P, and the
average reports every step as the loop weighs an allreduce step: B * (L + alpha/2 * P) / S of
the sums, B the batch's rows, 0 when S is 0. With K = 1 the loss curve and the stopping epoch
are allreduce's to rounding; with K > 1, the same measure of the models the steps used. It
costs 3 numbers a step (at most 3K) per average; one rank reports step by step.

Why the optimizer state is averaged too, in the same buffer: afterwards every rank holds one
and the same state, so the epoch's evaluation, the stopping rule, the best parameters and every
checkpoint (all taken at averaging points) see one model, and a checkpoint resumes on any rank
count exactly as an allreduce checkpoint does. It makes each average (n_arrays + 1) times
larger; bench/local_sgd.py measures the alternative that keeps each rank's moments.

Lockstep: a rank's stop flag and its losses wait for the next average, so every rank makes the
same decisions at the same step (a preemption is honoured at the next average, at most K - 1
steps later). `--sync-warmup-steps W` makes the first W steps of the run plain allreduce steps
(post-local SGD, Lin et al. 2020). With one rank every step is an average of one model:
nothing is sent, nothing is rounded, and the run is the allreduce run bit for bit.
"""

from __future__ import annotations

import time

import numpy as np

from mpinn.nn.model import weight_ranges
from mpinn.parallel.step import StepStrategy


class LocalAveraging(StepStrategy):
    """Local steps, and a weighted average of the models every ``every`` steps and at epoch ends."""

    local = True

    def __init__(self, comm, model, params, replicated, every, warmup_steps=0, clock=None):
        """``replicated`` is the allreduce strategy over the same params and optimizer (the
        warm-up steps); ``clock()`` gives the global steps done (the loop's, resumed parts included)."""
        self.comm, self.model, self.params = comm, model, params
        self.every, self.warmup_steps = int(every), int(warmup_steps)
        self.name = f"local:{self.every}"
        self._replicated = replicated
        self.optimizer = replicated.optimizer
        self.alpha = replicated.alpha
        n = self.n = model.n_params
        self.grad = replicated.grad  # scratch shared with the warm-up steps
        self.decay = weight_ranges(model, 0, n)
        scalars, arrays = self.optimizer.state()
        self._arrays = [arrays[k] for k in sorted(arrays)]  # the optimizer's own arrays, averaged in place
        self.buffer = np.zeros(self._head + 3 * min(self.every, 64), dtype=model.dtype)
        self._batch_rows = np.zeros(min(self.every, 64))  # each recorded step's global batch rows
        self._clock = clock
        self._steps = 0              # steps taken through this object (when no clock is given)
        self.since = 0               # local steps since the last average (checkpointed)
        self._rows = 0.0             # this rank's rows (or sample weight) since the last average
        self._recorded = 0           # steps whose (loss, weight, penalty) sums wait in the buffer
        self._flag = 0.0             # this rank's stop request, sent with the next average
        self._skipped = 0            # local steps on which this rank had no weight (and did not step)
        self._warm = False           # the current step is an allreduce (warm-up) step
        self.averages = 0            # parameter averages so far
        self.comm_seconds = 0.0

    @property
    def _head(self):
        """Where the buffer's per-step sums start: after the averaged arrays, w and the flag."""
        return (1 + len(self._arrays)) * self.n + 2

    @property
    def reductions(self):
        """Gradient reductions (warm-up steps) plus parameter averages so far."""
        return self._replicated.reductions + self.averages

    def step(self, xb, yb, sw, weight, after_grad, batch_rows):
        """A warm-up (allreduce) step, or a local step: (this rank's loss sum, its weight, its
        share of the penalty, False); the stop flag waits for ``settle``."""
        done = self._clock() if self._clock else self._steps
        self._steps += 1
        self._warm = done < self.warmup_steps
        if self._warm:
            before = self._replicated.comm_seconds
            out = self._replicated.step(xb, yb, sw, weight, after_grad)
            self.comm_seconds += self._replicated.comm_seconds - before
            return out
        params, grad = self.params, self.grad
        loss_sum = self.model.loss_grad_sum(params, xb, yb, grad, sw)
        self._flag = max(self._flag, after_grad(grad))
        share = len(xb) / batch_rows  # of the L2 term: the ranks' shares add up to the global step's
        penalty = self.model.penalty(params) * share if self.alpha else 0.0
        if weight > 0:
            self.optimizer.step(params, grad, weight, self.alpha * share, self.decay)
        else:
            self._skipped += 1
        self._rows += weight
        self.since += 1
        if self.comm.size > 1:  # the raw sums, for settle to report the loss as allreduce does
            j, at = self._recorded, self._head + 3 * self._recorded
            if at + 3 > len(self.buffer) or j == len(self._batch_rows):
                self._grow(j)
            self.buffer[at], self.buffer[at + 1], self.buffer[at + 2] = loss_sum, weight, penalty
            self._batch_rows[j] = batch_rows
            self._recorded = j + 1
        return loss_sum, weight, penalty, False

    def _grow(self, j):
        """Room for twice the j steps recorded (at most K): a window longer than 64 steps, once a run."""
        steps = min(max(2 * j, 64, len(self._batch_rows)), self.every)
        buffer = np.zeros(self._head + 3 * steps, dtype=self.buffer.dtype)
        kept = min(len(self.buffer), len(buffer))
        buffer[:kept] = self.buffer[:kept]
        batch_rows = np.zeros(steps)
        batch_rows[:len(self._batch_rows)] = self._batch_rows
        self.buffer, self._batch_rows = buffer, batch_rows

    def settle(self, contribution, stop, last_in_epoch):
        """After each step: (the loss contribution to add to the epoch's sum, stop now) on every
        rank alike. Local steps give (0, False) until the average, which gives the window's
        steps' contributions as allreduce weighs them (the loop's ``contribution``, this rank's
        m_r * L_r / S_r, is not that sum's part and is not used)."""
        if self._warm:
            return contribution, stop
        # One rank averages one model: nothing to send or wait for, and its loss adds up step by
        # step, in allreduce's order.
        alone = self.comm.size == 1
        if self.since < self.every and not last_in_epoch:
            return (contribution if alone else 0.0), False
        total, stop = (contribution, self._flag > 0) if alone else self._average()
        self.averages += 1
        self.since, self._rows, self._recorded, self._flag, self._skipped = 0, 0.0, 0, 0.0, 0
        return total, stop

    def _average(self):
        n, buf, w = self.n, self.buffer, self._rows
        parts = [self.params, *self._arrays]
        for i, a in enumerate(parts):
            np.multiply(a, w, out=buf[i * n:(i + 1) * n])
        head, steps = self._head, self._recorded
        buf[head - 2:head] = (w, self._flag)
        sent = buf[:head + 3 * steps]  # the steps' sums, not the unused room after them
        t = time.perf_counter()
        self.comm.allreduce_sum(sent)  # the one collective of K steps
        self.comm_seconds += time.perf_counter() - t
        total_w = buf[head - 2]
        if total_w > 0:  # else no rank stepped, every model is the last average: keep it
            for i, a in enumerate(parts):
                np.divide(buf[i * n:(i + 1) * n], total_w, out=a)
        # Each step's loss as the loop weighs allreduce's: the batch's rows times the mean loss
        # B * (L / S + alpha/2 * P / S), with L, S and P summed over the ranks (0 when S is 0).
        total, stepped, half_alpha = 0.0, 0, 0.5 * self.alpha
        for j in range(steps):
            loss_sum, weight, penalty = buf[head + 3 * j:head + 3 * j + 3]
            if weight:
                loss = float(loss_sum) / float(weight)
                if self.alpha:
                    loss += half_alpha * float(penalty) / float(weight)
                total += loss * float(self._batch_rows[j])
            stepped += weight > 0
        if hasattr(self.optimizer, "t"):
            # Adam's step count: the steps on which some rank stepped (this rank's own, its
            # skipped steps that another rank took, none of a step no rank took).
            self.optimizer.t += int(stepped) - (steps - self._skipped)
        return total, bool(buf[head - 1] > 0)

    def optimizer_state(self, everywhere=False):
        """Collective: (scalars, arrays). Checkpoints are written at averages (epoch ends, and
        stops, which wait for an average), where every rank holds the same state; with one rank
        `since` may be nonzero, and is kept."""
        scalars, arrays = self.optimizer.state()
        return {**scalars, "local_averaging": {"every": self.every, "since": self.since}}, arrays

    def load_optimizer_state(self, scalars, arrays):
        """From a checkpoint of any mode (an allreduce or sharded one resumes at an average)."""
        self.optimizer.load_state(scalars, arrays)
        self.since = int(scalars.get("local_averaging", {}).get("since", 0))

    def state_bytes(self):
        return self.optimizer.state_bytes() + self.buffer.nbytes
