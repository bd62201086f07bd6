"""Full-batch L-BFGS-B (scipy) over data spread across ranks, as the estimators' solver='lbfgs'.

Rank 0 runs scipy's optimizer; the other ranks follow it. Each loss/gradient evaluation starts
with one broadcast of [command | x] from rank 0, every rank sums its training rows, and one
Allreduce joins them. Only rank 0's reduced values steer scipy, so the number of evaluations
and the iterates are rank 0's decisions: nothing relies on every rank's floats being bitwise
equal (which MPI recommends but does not promise). scipy sees scikit-learn's packing order
(all W, then all b), so runs match sklearn's.
"""

from __future__ import annotations

import numpy as np

from mpinn.errors import JobError

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


def fit_lbfgs(trainer, max_iter, max_fun, tol, chunk_rows=65536):
    """Run scipy's L-BFGS-B on ``trainer.params`` in place (collective); returns an LbfgsResult.
    The caller checkpoints (it knows the iteration count)."""
    model, p, comm = trainer.model, trainer.problem, trainer.comm
    n, params, Y = model.n_params, trainer.params, trainer.Y
    order = lbfgs_order(model)
    local = p.train_rows.local
    buffer = np.zeros(n + 2, dtype=model.dtype)  # [gradient | loss | weight]
    grad = buffer[:n]
    total = np.zeros(n + 2, dtype=model.dtype) if len(local) > chunk_rows else None
    # float64 whatever the model's dtype: the command must survive the broadcast exactly.
    command = np.zeros(n + 1, dtype=np.float64)
    alpha = trainer.cfg.alpha

    def evaluate():
        """This rank's part of the loss and gradient at ``params``, then one Allreduce."""
        acc = buffer if total is None else total
        acc[...] = 0
        for start in range(0, max(len(local), 1), chunk_rows):  # one pass even with no rows
            rows = local[start : start + chunk_rows]
            xb = model.input_buffer(len(rows))
            np.take(p.X, rows, axis=0, out=xb)
            sw = None if p.sample_weight is None else p.sample_weight[rows]
            acc[n] += model.loss_grad_sum(params, xb, Y[rows], grad, sw)
            acc[n + 1] += len(rows) if sw is None else sw.sum()
            if total is not None:
                total[:n] += grad
        if total is not None:
            buffer[...] = total
        comm.allreduce_sum(buffer)

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
        raise ImportError("solver='lbfgs' needs scipy: pip install scipy") from None

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
    except BaseException:
        broadcast(FAILED, params[order])  # the followers leave their loop instead of waiting
        raise
    broadcast(DONE, result.x)
    params[order] = command[1:]
    message = result.message.decode() if isinstance(result.message, bytes) else str(result.message)
    comm.bcast_json([int(result.nit), float(result.fun), int(result.status), message])
    return LbfgsResult(int(result.nit), float(result.fun), int(result.status), message)


def _follow(comm, command, evaluate, params, order):
    """Ranks other than 0: evaluate wherever rank 0 asks until it says done (or failed)."""
    while True:
        comm.bcast_array(command)
        params[order] = command[1:]
        if command[0] == EVALUATE:
            evaluate()
        elif command[0] == DONE:
            return LbfgsResult(*comm.bcast_json())
        else:
            raise JobError("L-BFGS failed on rank 0 (its error is reported there)")
