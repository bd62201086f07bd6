"""How the ranks combine one training step: the gradient reduction and the update around it.

A strategy owns the flat parameter and gradient buffers and the optimizer over the part of the
parameters this rank updates. The loop calls ``step`` once per global batch with this rank's
rows; it returns the global (loss sum, batch weight, L2 penalty, stop flag), the same on every
rank. The update rule itself stays in optim.py (no MPI); only the communication differs:

  allreduce  one in-place Allreduce of [gradient | loss | weight | flag | penalty]; every rank
             then updates all P parameters (the same arithmetic, hence the same bits).
  sharded    ZeRO stage 1: a Reduce_scatter leaves each rank the summed gradient of its own
             contiguous 1/N slice, the rank updates that slice only (optimizer state for it
             alone), and an in-place Allgather gives every rank all new parameters. The
             update is elementwise, so the parameters are those of ``allreduce`` up to the
             order of the cross-rank sums (bit for bit at N = 2, where a + b = b + a).
  overlap    ``allreduce`` with one Iallreduce per layer started as backward produces it
             (a benchmark option; it did not pay on the machines measured).
  local:K    model averaging (sync_local.py): local steps without communication, one
             Allreduce of the models every K steps; the result depends on N.

The batch weight must be known before the update, so the sharded step sums it with a one-
element Iallreduce started before the forward pass; the loss, the stop flag and the L2 penalty
travel at the end of the last rank's block and come back with the Allgather. Each rank sums
the penalty over its own slice only, so no O(P) work is repeated on every rank.
"""

from __future__ import annotations

import time

import numpy as np

from mpinn.nn.model import weight_ranges

SYNCS = ("auto", "allreduce", "sharded")
# `auto` shards when there is more than one rank and the model has at least this many
# parameters; below it the two extra small collectives cost more than the shared update saves
# (docs/performance.md, "Choosing --sync").
AUTO_SHARD_MIN_PARAMS = 1 << 15


def parse_sync(name):
    """(strategy, K) of a --sync value: K is local:K's period, None for the others. ValueError
    with a one-line message for anything else."""
    if isinstance(name, str) and name.startswith("local:"):
        k = name[len("local:"):]
        if not (k.isdigit() and int(k) >= 1):
            raise ValueError(f"local:K averages the models every K steps: K must be an integer >= 1, got {name!r}")
        return "local", int(k)
    if name not in SYNCS:
        raise ValueError(f"choose from {', '.join(SYNCS)} or local:K, got {name!r}")
    return name, None


def resolve_sync(name, size, n_params):
    """The strategy `auto` stands for with ``size`` ranks and ``n_params`` parameters."""
    if name != "auto":
        return name
    return "sharded" if size > 1 and n_params >= AUTO_SHARD_MIN_PARAMS else "allreduce"


def slice_bounds(n, size):
    """Rank r updates [b[r], b[r+1]): contiguous slices whose sizes differ by at most one."""
    return [n * r // size for r in range(size + 1)]


class Replicated:
    """Every rank reduces the whole gradient and applies the whole update."""

    name = "allreduce"
    local = False  # every step is one model on every rank (LocalAveraging's is True)

    def __init__(self, comm, model, params, optimizer_factory, alpha, optimizer=None):
        self.comm, self.model, self.alpha = comm, model, alpha
        n = self.n = model.n_params
        self.params = params
        self.reductions = 0  # gradient reductions so far (the metrics' per-epoch count)
        # [gradient | loss | weight | stop flag | penalty]: one Allreduce carries them all, so
        # every rank learns at the same step that some rank was asked to stop.
        self.buffer = np.zeros(n + 4, dtype=model.dtype)
        self.grad = self.buffer[:n]
        self.decay = weight_ranges(model, 0, n)
        b = slice_bounds(n, comm.size)
        self._penalty_ranges = weight_ranges(model, b[comm.rank], b[comm.rank + 1])
        self.optimizer = _adopt(optimizer, optimizer_factory, n, 0, n)
        self.comm_seconds = 0.0

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

    def settle(self, contribution, stop, last_in_epoch):
        """After the loop has weighed the step's loss: it is already global (see LocalAveraging)."""
        return contribution, stop

    _taken = 0

    def take_reductions(self):
        """Reductions since the last call (the per-epoch count in the metrics)."""
        done, self._taken = self.reductions - self._taken, self.reductions
        return done

    def _update(self):
        n, buf = self.n, self.buffer
        weight = float(buf[n + 1])
        self.optimizer.step(self.params, self.grad, weight, self.alpha, self.decay)
        return float(buf[n]), weight, float(buf[n + 3]), bool(buf[n + 2] > 0)

    def optimizer_state(self):
        """Collective: (scalars, full-length arrays); the arrays are valid on rank 0."""
        return self.optimizer.state()

    def load_optimizer_state(self, scalars, arrays):
        self.optimizer.load_state(scalars, arrays)

    def state_bytes(self):
        return self.optimizer.state_bytes()


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


class Sharded:
    """Each rank updates (and keeps optimizer state for) its own 1/N slice of the parameters.

    The buffers are N equal blocks (Reduce_scatter_block and Allgather: on MPICH 5.0 about one
    Allreduce's time, where the vector variants cost 1.7x), padded with zeros; the scalars
    [loss | stop flag | penalty] take the last three places of the last block.
    """

    name = "sharded"
    local = False
    settle, take_reductions, _taken = Replicated.settle, Replicated.take_reductions, 0

    def __init__(self, comm, model, params, optimizer_factory, alpha, optimizer=None):
        self.comm, self.model, self.alpha = comm, model, alpha
        self.reductions = 0  # reduce-scatter + allgather pairs so far
        n = self.n = model.n_params
        size, rank = comm.size, comm.rank
        self.block = block = max(-(-(n + 3) // size), 3)
        self.total = total = block * size
        self.lo, self.hi = min(rank * block, n), min((rank + 1) * block, n)
        self.buffer = np.zeros(total, dtype=model.dtype)
        self.grad = self.buffer[:n]
        self._mine = np.zeros(block, dtype=model.dtype)  # my summed block
        self._gathered = np.zeros(total, dtype=model.dtype)
        self._gathered[:n] = params
        self.params = self._gathered[:n]
        self._weight = np.zeros(1, dtype=model.dtype)
        self._last = rank == size - 1
        self._own_weights = weight_ranges(model, self.lo, self.hi)
        self.decay = [(a - self.lo, b - self.lo) for a, b in self._own_weights]
        self.optimizer = _adopt(optimizer, optimizer_factory, n, self.lo, self.hi)
        self.comm_seconds = 0.0

    def step(self, xb, yb, sw, weight, after_grad, batch_rows=None):
        buf, comm, k, end = self.buffer, self.comm, self.hi - self.lo, self.total
        t = time.perf_counter()
        self._weight[0] = weight
        request = comm.start_allreduce_sum(self._weight)
        spent = time.perf_counter() - t
        buf[end - 3] = self.model.loss_grad_sum(self.params, xb, yb, self.grad, sw)
        buf[end - 2] = after_grad(self.grad)
        buf[end - 1] = self.model.penalty(self.params, self._own_weights) if self.alpha else 0.0
        t = time.perf_counter()
        mine = comm.reduce_scatter_block_sum(buf, self._mine)
        if request is not None:
            comm.wait_all([request])
        spent += time.perf_counter() - t
        weight = float(self._weight[0])
        self.optimizer.step(self.params[self.lo:self.hi], mine[:k], weight, self.alpha, self.decay)
        gathered = self._gathered
        if self._last:
            gathered[end - 3:] = mine[len(mine) - 3:]
        t = time.perf_counter()
        comm.allgather_in_place(gathered)
        self.comm_seconds += spent + time.perf_counter() - t
        self.reductions += 1
        return float(gathered[end - 3]), weight, float(gathered[end - 1]), bool(gathered[end - 2] > 0)

    def optimizer_state(self):
        """Collective: (scalars, full-length arrays gathered on rank 0; None elsewhere)."""
        scalars, arrays = self.optimizer.state()
        full = {name: self.comm.gather_rows(arrays[name]) for name in sorted(arrays)}
        return scalars, full

    def load_optimizer_state(self, scalars, arrays):
        """From full-length arrays (a checkpoint of any mode and rank count)."""
        self.optimizer.load_state(scalars, {k: v[self.lo:self.hi] for k, v in arrays.items()})

    def state_bytes(self):
        return self.optimizer.state_bytes()


def _adopt(optimizer, factory, n, lo, hi):
    """The optimizer over [lo, hi): a new one, the one given (partial_fit), or the given
    whole-buffer one's state sliced (a model loaded or trained replicated, now sharded)."""
    if optimizer is None:
        return factory(hi - lo)
    if optimizer.n_params == hi - lo:
        return optimizer
    if optimizer.n_params == n:
        sliced = factory(hi - lo)
        scalars, arrays = optimizer.state()
        sliced.load_state(scalars, {k: v[lo:hi] for k, v in arrays.items()})
        return sliced
    raise ValueError(f"optimizer state covers {optimizer.n_params} parameters, expected {hi - lo} or {n}: "
                     "continue with the same ranks and sync mode it was trained with")


def make_sync(name, comm, model, params, cfg, optimizer=None, clock=None):
    """The step strategy ``name`` ('auto', 'allreduce', 'sharded', 'overlap', 'local:K') for
    this job; ``clock()`` gives the global steps done (local:K's warm-up counts them)."""
    from mpinn.train.config import optimizer_from_config  # config imports SYNCS from here

    def factory(size):
        return optimizer_from_config(cfg, size, model.dtype)

    kind, every = ("overlap", None) if name == "overlap" else parse_sync(name)
    if kind == "local":
        from mpinn.parallel.local_averaging import LocalAveraging

        replicated = Replicated(comm, model, params, factory, cfg.alpha, optimizer)
        return LocalAveraging(comm, model, params, replicated, every, cfg.sync_warmup_steps, clock)
    kind = {"allreduce": Replicated, "sharded": Sharded, "overlap": Overlapped}[
        resolve_sync(kind, comm.size, model.n_params)]
    return kind(comm, model, params, factory, cfg.alpha, optimizer)
