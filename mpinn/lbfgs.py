"""Full-batch L-BFGS-B (scipy) over data spread across ranks, as the estimators' solver='lbfgs'.

Every loss/gradient evaluation sums this rank's training rows and joins one Allreduce, so all
ranks see the same function and take the same steps. scipy sees scikit-learn's packing order
(all W, then all b), so runs match sklearn's.
"""

from __future__ import annotations

import numpy as np


def lbfgs_order(model):
    """Index of sklearn's packing (all W, then all b) into the flat [W0, b0, W1, b1, ...]."""
    offsets = model.offsets
    return np.concatenate([np.arange(s, w) for s, w, _ in offsets] + [np.arange(w, e) for _, w, e in offsets])


def fit_lbfgs(trainer, max_iter, max_fun, tol, chunk_rows=65536):
    """Run scipy's L-BFGS-B on ``trainer.params`` in place; returns scipy's OptimizeResult.
    The caller checkpoints (it knows the iteration count)."""
    try:
        import scipy.optimize
    except ImportError:
        raise ImportError("solver='lbfgs' needs scipy: pip install scipy") from None
    model, p, comm = trainer.model, trainer.problem, trainer.comm
    n, params, Y = model.n_params, trainer.params, trainer.Y
    order = lbfgs_order(model)
    local = p.shard.local_positions(p.train_rows)[1]
    buffer = np.zeros(n + 2, dtype=model.dtype)  # [gradient | loss | weight]
    grad = buffer[:n]
    total = np.zeros(n + 2, dtype=model.dtype) if len(local) > chunk_rows else None
    alpha = trainer.cfg.alpha

    def loss_grad(x):
        params[order] = x
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
        weight = float(buffer[n + 1])
        value = float(buffer[n]) / weight
        if alpha:
            value += (0.5 * alpha) * model.penalty(params) / weight
        model.finish_gradient(params, grad, alpha, weight)
        return value, grad[order]

    result = scipy.optimize.minimize(loss_grad, params[order], method="L-BFGS-B", jac=True,
                                     options={"maxfun": max_fun, "maxiter": max_iter, "gtol": tol})
    params[order] = result.x
    # Ranks ran identical iterations; rank 0's result is the one kept, bit for bit.
    comm.bcast_array(params)
    return result
