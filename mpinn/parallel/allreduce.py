"""`--sync allreduce` (and `overlap`): every rank reduces the whole gradient and updates all
P parameters with the same arithmetic, hence the same bits (sync.py compares the strategies)."""

from __future__ import annotations

import time

import numpy as np

from mpinn.data.partition import even_bounds
from mpinn.nn.model import weight_ranges
from mpinn.parallel.step import StepStrategy, adopt_optimizer


class Replicated(StepStrategy):
    """Every rank reduces the whole gradient and applies the whole update."""

    name = "allreduce"

    def __init__(self, comm, model, params, optimizer_factory, alpha, optimizer=None):
        self.comm, self.model, self.alpha = comm, model, alpha
        n = self.n = model.n_params
        self.params = params
        # [gradient | loss | weight | stop flag | penalty]: one Allreduce carries them all, so
        # every rank learns at the same step that some rank was asked to stop.
        self.buffer = np.zeros(n + 4, dtype=model.dtype)
        self.grad = self.buffer[:n]
        self.decay = weight_ranges(model, 0, n)
        b = even_bounds(n, comm.size)
        self._penalty_ranges = weight_ranges(model, b[comm.rank], b[comm.rank + 1])
        self.optimizer = adopt_optimizer(optimizer, optimizer_factory, n, 0, n)

    def step(self, xb, yb, sw, weight, after_grad, batch_rows=None):
        """One global step; ``after_grad(grad)`` runs before the reduction and returns the
        local stop flag (fault injection and the preemption signal). ``batch_rows``, the global
        batch's row count, is for LocalAveraging (the reduction sums the weights here)."""
        n, buf = self.n, self.buffer
        buf[n] = self.model.loss_grad_sum(self.params, xb, yb, self.grad, sw)
        buf[n + 1] = weight
        buf[n + 2] = after_grad(self.grad)
        buf[n + 3] = self.model.penalty(self.params, self._penalty_ranges) if self.alpha else 0.0
        t = time.perf_counter()
        self.comm.allreduce_sum(buf)  # the one collective per step
        self.comm_seconds += time.perf_counter() - t
        self.reductions += 1
        return self._update()

    def _update(self):
        n, buf = self.n, self.buffer
        weight = float(buf[n + 1])
        self.optimizer.step(self.params, self.grad, weight, self.alpha, self.decay)
        return float(buf[n]), weight, float(buf[n + 3]), bool(buf[n + 2] > 0)



class Overlapped(Replicated):
    """Replicated, with each layer's gradient slice reduced by its own Iallreduce as soon as
    backward has produced it (last layer first), all waited for before the update. The last
    layer's slice runs to the end of the buffer, so the scalars travel with it; the slices
    partition the buffer, so every element is summed exactly once."""

    name = "overlap"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        bounds = [s for s, _, _ in self.model.offsets] + [self.n + 4]
        self._parts = [self.buffer[bounds[i]:bounds[i + 1]] for i in range(self.model.n_layers)]

    def step(self, xb, yb, sw, weight, after_grad, batch_rows=None):
        n, buf, comm = self.n, self.buffer, self.comm
        last = self.model.n_layers - 1
        requests = []
        spent = 0.0

        def on_grad(layer, loss):
            nonlocal spent
            if layer == last:
                buf[n] = loss
                buf[n + 1] = weight
                buf[n + 2] = after_grad(self.grad)
                buf[n + 3] = self.model.penalty(self.params, self._penalty_ranges) if self.alpha else 0.0
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
        self.reductions += 1
        self.comm_seconds += spent + time.perf_counter() - t
        return self._update()
