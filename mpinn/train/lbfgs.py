"""Full-batch L-BFGS-B (scipy) over data spread across ranks, as the estimators' solver='lbfgs'.

Rank 0 runs scipy's optimizer; the other ranks follow it. Each loss/gradient evaluation starts
with one broadcast of [command | x] from rank 0, every rank sums its training rows, and the
ranks' sums are joined. Only rank 0's reduced values steer scipy, so the number of evaluations
and the iterates are rank 0's decisions. scipy sees scikit-learn's packing order (all W, then
all b), so runs match sklearn's.

How the sums are joined (``reduction``):
  tree       (default) the rows sit in fixed chunks (partition.chunk_shard), each chunk summed
             alone, the chunk sums added along one binary tree (parallel/tree_sum.py): the
             same bits for any number of ranks, so N ranks give the one-rank model. L-BFGS's
             line search amplifies the last bits of a sum into another model otherwise.
  allreduce  one Allreduce of the ranks' sums: cheaper, but the model depends on N in its last
             digits and, through the line search, further (docs/performance.md measures both).
Each evaluation's reduced buffer carries an error flag: a rank whose evaluation raised still
joins the reduction, and then every rank raises that rank's exception (parallel/agree.py).
"""

from __future__ import annotations

import numpy as np

from mpinn.data.partition import chunk_shard, even_bounds, tree_chunking
from mpinn.parallel.agree import agree, on_root
from mpinn.parallel.tree_sum import TreeSum

# Commands rank 0 broadcasts in slot 0 of [command | x].
EVALUATE, DONE, FAILED = 0.0, 1.0, 2.0


def lbfgs_order(model):
    """Index of sklearn's packing (all W, then all b) into the flat [W0, b0, W1, b1, ...]."""
    offsets = model.offsets
    return np.concatenate([np.arange(s, w) for s, w, _ in offsets] + [np.arange(w, e) for _, w, e in offsets])


class LbfgsResult:
    """What callers read of scipy's OptimizeResult, the same on every rank (rank 0's)."""

    def __init__(self, nit, fun, status, message):
        self.nit, self.fun, self.status, self.message = nit, fun, status, message


def fit_lbfgs(trainer, max_iter, max_fun, tol, chunk_rows=65536, reduction="tree"):
    """Run scipy's L-BFGS-B on ``trainer.params`` in place (collective); returns an LbfgsResult.
    The caller checkpoints (it knows the iteration count). ``reduction="tree"`` needs the
    problem's shard cut at the chunk boundaries (partition.chunk_shard) and every row training."""
    model, p, comm = trainer.model, trainer.problem, trainer.comm
    n, params, Y = model.n_params, trainer.params, trainer.Y
    order = lbfgs_order(model)
    buffer = np.zeros(n + 3, dtype=model.dtype)  # [gradient | loss | weight | error flag]
    grad = buffer[:n]
    sums = _TreeSums(p, comm, model, Y, buffer) if reduction == "tree" else \
        _AllreduceSums(p, comm, model, Y, buffer, chunk_rows)
    # float64 whatever the model's dtype: the command must survive the broadcast exactly.
    command = np.zeros(n + 1, dtype=np.float64)
    alpha = trainer.cfg.alpha
    agreed = []  # an evaluation's failure every rank already raises: rank 0 must not announce it

    def evaluate():
        error = None
        try:
            sums.compute(params)
        except Exception as exc:  # noqa: BLE001 - reported through the flag, raised on every rank below
            error = exc
        if sums.reduce(error is not None):  # the reduction carries every rank's flag
            agreed.append(True)
            agree(comm, error)

    def broadcast(cmd, x):
        command[0] = cmd
        command[1:] = x
        comm.bcast_array(command)

    if comm.rank != 0:
        return _follow(comm, command, evaluate, params, order)

    try:
        import scipy.optimize
    except ImportError:
        broadcast(FAILED, params[order])
        error = ImportError("solver='lbfgs' needs scipy: pip install scipy")
        agree(comm, error)

    def loss_grad(x):
        broadcast(EVALUATE, x)
        params[order] = command[1:]  # what every rank evaluates, bit for bit
        evaluate()
        weight = float(buffer[n + 1])
        value = float(buffer[n]) / weight
        if alpha:
            value += (0.5 * alpha) * model.penalty(params) / weight
        model.finish_gradient(params, grad, alpha, weight)
        return value, grad[order]

    try:
        result = scipy.optimize.minimize(loss_grad, params[order], method="L-BFGS-B", jac=True,
                                         options={"maxfun": max_fun, "maxiter": max_iter, "gtol": tol})
    except BaseException as exc:
        if agreed:  # raised by an evaluation on every rank already
            raise
        broadcast(FAILED, params[order])  # the followers leave their loop and learn what happened
        agree(comm, exc)
        raise
    broadcast(DONE, result.x)
    params[order] = command[1:]
    message = result.message.decode() if isinstance(result.message, bytes) else str(result.message)
    on_root(comm, lambda: [int(result.nit), float(result.fun), int(result.status), message])
    return LbfgsResult(int(result.nit), float(result.fun), int(result.status), message)


class _AllreduceSums:
    """This rank's sums in blocks of ``chunk_rows`` rows, joined by one Allreduce."""

    def __init__(self, p, comm, model, Y, buffer, chunk_rows):
        self.p, self.comm, self.model, self.Y, self.buffer, self.chunk_rows = p, comm, model, Y, buffer, chunk_rows
        self.local = p.train_rows.local
        self.total = np.zeros_like(buffer) if len(self.local) > chunk_rows else None

    def compute(self, params):
        n, buffer, total, local, p = self.model.n_params, self.buffer, self.total, self.local, self.p
        acc = buffer if total is None else total
        acc[...] = 0
        for start in range(0, max(len(local), 1), self.chunk_rows):  # one pass even with no rows
            rows = local[start : start + self.chunk_rows]
            xb = self.model.input_buffer(len(rows))
            np.take(p.X, rows, axis=0, out=xb)
            sw = None if p.sample_weight is None else p.sample_weight[rows]
            acc[n] += self.model.loss_grad_sum(params, xb, self.Y[rows], buffer[:n], sw)
            acc[n + 1] += len(rows) if sw is None else sw.sum()
            if total is not None:
                total[:n] += buffer[:n]
        if total is not None:
            buffer[...] = total

    def reduce(self, failed):
        """The reduction; True when some rank's evaluation failed (its flag rode along)."""
        n, buffer = self.model.n_params, self.buffer
        if failed:
            buffer[...] = 0
            buffer[n + 2] = 1.0
        self.comm.allreduce_sum(buffer)
        return buffer[n + 2] > 0


class _TreeSums:
    """Each chunk of rows summed alone, the chunk sums joined by a TreeSum (the same bits on
    any number of ranks). A rank without chunks does no work, so it has nothing to report."""

    def __init__(self, p, comm, model, Y, buffer):
        shard = p.shard
        n_chunks, self.rows = tree_chunking(shard.n_rows)
        self.lo, self.hi = even_bounds(n_chunks, comm.size)[comm.rank:comm.rank + 2]
        self.first = min(self.lo * self.rows, shard.n_rows)
        if shard != chunk_shard(shard.n_rows, comm.rank, comm.size) or len(p.train_rows.local) != shard.count:
            raise ValueError("reduction='tree' needs the chunk-aligned shard (partition.chunk_shard), every row training")
        self.p, self.model, self.Y, self.buffer, self.n_rows = p, model, Y, buffer, shard.n_rows
        self.tree = TreeSum(comm, n_chunks, self.lo, self.hi)
        self.sums = {c: np.zeros_like(buffer) for c in range(self.lo, self.hi)}

    def compute(self, params):
        n, p = self.model.n_params, self.p
        for c, out in self.sums.items():
            a = min(c * self.rows, self.n_rows) - self.first  # trailing chunks may be empty
            b = min((c + 1) * self.rows, self.n_rows) - self.first
            sw = None if p.sample_weight is None else p.sample_weight[a:b]
            out[n] = self.model.loss_grad_sum(params, p.X[a:b], self.Y[a:b], out[:n], sw)
            out[n + 1] = b - a if sw is None else sw.sum()
            out[n + 2] = 0.0

    def reduce(self, failed):
        n = self.model.n_params
        if failed:
            for k, out in enumerate(self.sums.values()):
                out[...] = 0
                out[n + 2] = 1.0 if k == 0 else 0.0
        self.buffer[...] = self.tree.reduce(self.sums, n + 3, self.model.dtype)
        return self.buffer[n + 2] > 0


def _follow(comm, command, evaluate, params, order):
    """Ranks other than 0: evaluate wherever rank 0 asks until it says done (or failed)."""
    while True:
        comm.bcast_array(command)
        params[order] = command[1:]
        if command[0] == EVALUATE:
            evaluate()
        elif command[0] == DONE:
            return LbfgsResult(*on_root(comm, lambda: None))
        else:
            agree(comm, None)  # raises rank 0's exception here too
