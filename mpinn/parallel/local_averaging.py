"""Model averaging (local SGD, `--sync local:K`): each rank steps alone, the ranks average every K steps.

Each rank takes its own rows of every global batch (the same global batches as the other
strategies) and applies the optimizer to its own copy of the model with the gradient of its
local objective: the mean over its rows plus the global step's L2 term (alpha * W / batch
rows: the rank's share of alpha * W, divided by its rows). No collective runs on such a step.
After K local steps, and at the last step of every epoch, one Allreduce of

    [w*params | w*optimizer arrays (Adam m and v, SGD velocity) | w | loss since last | stop flag]

replaces every rank's parameters and optimizer state by their average weighted by w, the rows
(or sample weight) the rank stepped on since the previous average (FedAvg's weighting: a rank
without rows has no say). With plain or momentum SGD and K = 1 this is exactly the allreduce
update (the update is linear in the gradient); with Adam, or K > 1, it is another algorithm,
and its result depends on the number of ranks.

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
        self.buffer = np.zeros((1 + len(self._arrays)) * n + 3, dtype=model.dtype)
        self._clock = clock
        self._steps = 0              # steps taken through this object (when no clock is given)
        self.since = 0               # local steps since the last average (checkpointed)
        self._rows = 0.0             # this rank's rows (or sample weight) since the last average
        self._pending = 0.0          # this rank's loss contributions since the last average
        self._flag = 0.0             # this rank's stop request, sent with the next average
        self._skipped = 0            # local steps on which this rank had no rows (and did not step)
        self._warm = False           # the current step is an allreduce (warm-up) step
        self.averages = 0            # parameter averages so far
        self.comm_seconds = 0.0

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
        return loss_sum, weight, penalty, False

    def settle(self, contribution, stop, last_in_epoch):
        """After each step: (the loss contribution to add to the epoch's sum, stop now) on every
        rank alike. Local steps give (0, False) until the average, which gives the ranks' sum."""
        if self._warm:
            return contribution, stop
        # One rank averages one model: nothing to send or wait for, and its loss adds up step by
        # step, in allreduce's order.
        alone = self.comm.size == 1
        if not alone:
            self._pending += contribution
        if self.since < self.every and not last_in_epoch:
            return (contribution if alone else 0.0), False
        total, stop = (contribution, self._flag > 0) if alone else self._average()
        self.averages += 1
        self.since, self._rows, self._pending, self._flag, self._skipped = 0, 0.0, 0.0, 0.0, 0
        return total, stop

    def _average(self):
        n, buf, w = self.n, self.buffer, self._rows
        parts = [self.params, *self._arrays]
        for i, a in enumerate(parts):
            np.multiply(a, w, out=buf[i * n:(i + 1) * n])
        end = len(parts) * n
        buf[end:] = (w, self._pending, self._flag)
        t = time.perf_counter()
        self.comm.allreduce_sum(buf)  # the one collective of K steps
        self.comm_seconds += time.perf_counter() - t
        total_w = buf[end]
        for i, a in enumerate(parts):
            np.divide(buf[i * n:(i + 1) * n], total_w, out=a)
        if self._skipped and hasattr(self.optimizer, "t"):
            self.optimizer.t += self._skipped  # Adam's step count: the steps of the ranks that did step
        return float(buf[end + 1]), bool(buf[end + 2] > 0)

    def optimizer_state(self):
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
