"""`--sync shm`: the ranks of one node exchange gradients and parameters through MPI-3 shared
memory, with no message and no copy into MPI's buffers (sync.py compares the strategies).

Each rank's backward writes [gradient | loss | weight | stop flag | penalty] into its own
segment of a node-wide window. After a fence, node rank r sums slice r of every segment into
slice r of its own segment, which no other rank reads, in a fixed order (its own first, then
the next ranks'; at 2 ranks a + b: the Allreduce's bits, whatever the timing), and every rank
sums the four scalars of all segments in rank order. Across nodes, the ranks with the same
node index Allreduce their slice sums (P / ranks-per-node each): the two-level step. Each rank
then updates its slice of the node's one parameter copy (a window on node rank 0's memory)
with its own slice of the optimizer state, and a second fence makes the new parameters every
rank's next forward input.
"""

from __future__ import annotations

import os
import time

import numpy as np

from mpinn.data.partition import even_bounds
from mpinn.errors import InputError
from mpinn.nn.model import weight_ranges
from mpinn.parallel.step import StepStrategy, adopt_optimizer

# Tests only: cut the ranks into this many "nodes" (consecutive blocks) so that one machine
# runs the cross-node level too.
FAKE_NODES_ENV = "MPINN_SHM_NODES"
SCALARS = 4  # loss, batch weight, stop flag, penalty
SHM_DIR = "/dev/shm"  # where MPICH and Open MPI back shared windows on Linux


class SharedMemoryUnavailable(InputError):
    """--sync shm cannot run on these nodes (an explicit --sync shm exits 2; auto falls back)."""


def fake_nodes() -> int:
    value = os.environ.get(FAKE_NODES_ENV, "")
    return int(value) if value.isdigit() else 0


def shm_free_bytes():
    """Free bytes in /dev/shm (None where there is no such file system to ask)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def window_bytes(n_params, itemsize, node_size):
    """What a node's windows take: a gradient segment per rank and one parameter copy."""
    return ((n_params + SCALARS) * node_size + n_params) * itemsize


class SharedMemory(StepStrategy):
    """One parameter copy per node; each node rank reduces and updates its own slice."""

    name = "shm"

    def __init__(self, comm, model, params, optimizer_factory, alpha, optimizer=None):
        self.comm, self.model, self.alpha = comm, model, alpha
        n = self.n = model.n_params
        self.node, self.cross = comm.split_nodes(fake_nodes())
        # Every rank learns the same verdict: node sizes, and room for the windows on every node.
        need = window_bytes(n, np.dtype(model.dtype).itemsize, self.node.size)
        free = shm_free_bytes()
        short = need if free is not None and self.node.rank == 0 and free < 2 * need else 0
        facts = np.array([self.node.size, -self.node.size, short, -(free or 0) if short else 0], dtype=np.int64)
        comm.allreduce(facts, "max")
        problem = None
        if facts[0] != -facts[1]:
            problem = f"--sync shm needs the same number of ranks on every node (nodes have {-facts[1]} to {facts[0]})"
        elif facts[2]:
            problem = (f"--sync shm: {SHM_DIR} has {-facts[3] / 1e6:.0f} MB free on a node, its windows need "
                       f"{facts[2] / 1e6:.0f} MB (with room to spare: twice that)")
        if problem:
            for c in {id(c): c for c in (self.node, self.cross) if c is not comm}.values():
                c.free()
            raise SharedMemoryUnavailable(problem)
        self.nodes = self.cross.size
        bounds = even_bounds(n, self.node.size)
        self.lo, self.hi = bounds[self.node.rank], bounds[self.node.rank + 1]
        self._grads = self.node.shared_arrays(n + SCALARS, model.dtype, "each")
        self._params = self.node.shared_arrays(n, model.dtype, "first")
        self.grad = self._grads.segments[self.node.rank][:n]
        self._scalars = self._grads.segments[self.node.rank][n:]
        self.params = self._params.segments[0]
        if self.node.rank == 0:
            self.params[...] = params
        self._params.fence()
        self._wire()
        self._own_weights = weight_ranges(model, self.lo, self.hi)
        # Each slice's penalty is counted once in the job: by the first node's copy of it.
        self._counts_penalty = self.cross.rank == 0
        self.decay = [(a - self.lo, b - self.lo) for a, b in self._own_weights]
        self.optimizer = adopt_optimizer(optimizer, optimizer_factory, n, self.lo, self.hi)

    def _wire(self):
        """The views the reduction works on (also for bench/scaling_parts.py's exchange sweep)."""
        segments, r = self._grads.segments, self.node.rank
        self._sum = segments[r][self.lo:self.hi]  # my slice's sum, in place
        self._others = [s[self.lo:self.hi] for s in segments[r + 1:] + segments[:r]]
        self._sums = np.zeros(SCALARS, dtype=segments[r].dtype)  # the scalars' sums, my own

    def describe(self):
        """The start line's words: which level each reduction uses."""
        level = f"shared memory within nodes of {self.node.size} rank(s)"
        return level + (f", Allreduce of 1/{self.node.size} across {self.nodes} nodes" if self.nodes > 1 else "")

    def step(self, xb, yb, sw, weight, after_grad, batch_rows=None):
        scalars = self._scalars
        scalars[0] = self.model.loss_grad_sum(self.params, xb, yb, self.grad, sw)
        scalars[1] = weight
        scalars[2] = after_grad(self.grad)
        scalars[3] = self.model.penalty(self.params, self._own_weights) \
            if self.alpha and self._counts_penalty else 0.0
        t = time.perf_counter()
        grad, sums = self.reduce()
        spent = time.perf_counter() - t
        weight = float(sums[1])
        self.optimizer.step(self.params[self.lo:self.hi], grad, weight, self.alpha, self.decay)
        t = time.perf_counter()
        self.publish()
        self.comm_seconds += spent + time.perf_counter() - t
        self.reductions += 1
        return float(sums[0]), weight, float(sums[3]), bool(sums[2] > 0)

    def reduce(self):
        """(my slice of the gradient summed over the job, the four scalars' sums)."""
        n, total, sums = self.n, self._sum, self._sums
        self._grads.fence()  # every rank's gradient is written
        for part in self._others:  # a fixed order: the bits do not depend on timing
            total += part
        segments = self._grads.segments
        np.copyto(sums, segments[0][n:])
        for segment in segments[1:]:
            sums += segment[n:]
        if self.nodes > 1:  # the other nodes' sums of my slice and of the scalars
            self.cross.allreduce_sum(total)
            self.cross.allreduce_sum(sums)
        return total, sums

    def publish(self):
        """Wait until every slice is updated (and every segment read): the next forward's input."""
        self._params.fence()

    def held_bytes(self):
        """Bytes of parameters, gradient and optimizer state this rank holds; the node's one
        parameter copy counts 1/(ranks on the node) here."""
        itemsize = np.dtype(self.model.dtype).itemsize
        return self.n * itemsize // self.node.size + (self.n + SCALARS) * itemsize + self.state_bytes()

    def optimizer_state(self, everywhere=False):  # never everywhere: elastic runs take no shm
        """Collective: (scalars, full-length arrays on rank 0; None elsewhere). Every node
        holds the same state; rank 0 gathers its own node's slices."""
        scalars, arrays = self.optimizer.state()
        full = {name: self.node.gather_rows(arrays[name]) for name in sorted(arrays)}
        return scalars, full

    def load_optimizer_state(self, scalars, arrays):
        """From full-length arrays (a checkpoint of any mode and rank count)."""
        self.optimizer.load_state(scalars, {k: v[self.lo:self.hi] for k, v in arrays.items()})

    def release(self):
        """Collective: the parameters copied out of the shared window, which is freed."""
        if self._params is None:
            return self.params
        params = np.array(self.params)
        self._grads.fence()
        self._grads.free()
        self._params.free()
        self._grads = self._params = self.grad = self._scalars = self._sum = self._others = None  # memory gone
        self.params = params
        for comm in {id(c): c for c in (self.node, self.cross) if c is not self.comm}.values():
            comm.free()
        return params
