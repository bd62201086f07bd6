"""How the ranks combine one training step: the gradient reduction and the update around it.

A strategy owns the flat parameter and gradient buffers and the optimizer over the part of the
parameters this rank updates. The loop calls ``step`` once per global batch with this rank's
rows; it returns the global (loss sum, batch weight, L2 penalty, stop flag), the same on every
rank. The update rule itself stays in nn/optim.py (no MPI); only the communication differs:

  allreduce  one in-place Allreduce of [gradient | loss | weight | flag | penalty]; every rank
             then updates all P parameters (the same arithmetic, hence the same bits).
  sharded    ZeRO stage 1: a Reduce_scatter leaves each rank the summed gradient of its own
             contiguous 1/N slice, the rank updates that slice only (optimizer state for it
             alone), and an in-place Allgather gives every rank all new parameters. The
             update is elementwise, so the parameters are those of ``allreduce`` up to the
             order of the cross-rank sums (bit for bit at N = 2, where a + b = b + a).
  shm        the ranks of one node read each other's gradients in MPI-3 shared memory, sum
             and update one slice each of the node's one parameter copy; across nodes, an
             Allreduce of each slice among the ranks with the same node index
             (shared_memory.py). Bit for bit ``allreduce`` at N = 2.
  overlap    ``allreduce`` with one Iallreduce per layer started as backward produces it
             (a benchmark option; it did not pay on the machines measured).
  local:K    model averaging (local_averaging.py): local steps without communication, one
             Allreduce of the models every K steps; the result depends on N.

The batch weight must be known before the update, so the sharded step sums it with a one-
element Iallreduce started before the forward pass; the loss, the stop flag and the L2 penalty
travel at the end of the last rank's block and come back with the Allgather. Each rank sums
the penalty over its own slice only, so no O(P) work is repeated on every rank.
"""

from __future__ import annotations

from mpinn.options import parse_sync
from mpinn.parallel.allreduce import Overlapped, Replicated
from mpinn.parallel.local_averaging import LocalAveraging
from mpinn.parallel.shared_memory import SharedMemory, SharedMemoryUnavailable
from mpinn.parallel.sharded import Sharded

# `auto` takes shm (or, where shm cannot run, sharded) when there is more than one rank and
# the model has at least this many parameters; below it the extra small calls cost more than
# the shared update saves (docs/performance.md, "Choosing auto").
AUTO_SHARD_MIN_PARAMS = 1 << 15


def resolve_sync(name, size, n_params):
    """The strategy `auto` stands for with ``size`` ranks and ``n_params`` parameters (shm,
    measured fastest on big models, falls back to sharded where make_sync finds it cannot run)."""
    if name != "auto":
        return name
    return "shm" if size > 1 and n_params >= AUTO_SHARD_MIN_PARAMS else "allreduce"


def make_sync(name, comm, model, params, optimizer_factory, alpha, *, warmup_steps=0, optimizer=None, clock=None,
              shared_memory=True):
    """The step strategy ``name`` ('auto', 'allreduce', 'sharded', 'shm', 'overlap', 'local:K') for
    this job; ``optimizer_factory(n)`` makes the optimizer over n parameters; ``clock()`` gives
    the global steps done (local:K's warm-up counts them). ``shared_memory=False``: `auto` never
    takes shm (elastic training: a dead rank's window cannot be rebuilt from)."""
    kind, every = ("overlap", None) if name == "overlap" else parse_sync(name)
    if kind == "local":
        replicated = Replicated(comm, model, params, optimizer_factory, alpha, optimizer)
        return LocalAveraging(comm, model, params, replicated, every, warmup_steps, clock)
    resolved = resolve_sync(kind, comm.size, model.n_params)
    if resolved == "shm" and kind == "auto" and not shared_memory:
        resolved = "sharded"
    elif resolved == "shm" and kind == "auto":
        try:
            return SharedMemory(comm, model, params, optimizer_factory, alpha, optimizer)
        except SharedMemoryUnavailable:  # agreed on every rank: unequal nodes, or no room for the windows
            resolved = "sharded"
    kind = {"allreduce": Replicated, "sharded": Sharded, "shm": SharedMemory, "overlap": Overlapped}[resolved]
    return kind(comm, model, params, optimizer_factory, alpha, optimizer)
