"""The interface every step strategy has: what the training loop may call and read.

A strategy owns the flat parameter and gradient buffers and the optimizer over the part of the
parameters this rank updates (sync.py explains the strategies and chooses one). The loop calls
``step`` once per global batch with this rank's rows and gets the global (loss sum, batch weight,
L2 penalty, stop flag), the same on every rank; ``settle`` lets a strategy that defers its
reduction (local averaging) hand back the global loss later. The optimizer comes from a factory
the caller hands in (``optimizer_factory(n_params)``), so no strategy knows the configuration.
"""

from __future__ import annotations


class StepStrategy:
    """Base of the strategies: the counters, the deferred-settle default and the optimizer state."""

    name = "?"
    local = False        # True when steps run without communication (local averaging)
    reductions = 0       # reductions so far (the metrics' per-epoch count)
    comm_seconds = 0.0   # time spent in collectives
    _taken = 0

    def step(self, xb, yb, sw, weight, after_grad, batch_rows=None):
        """One global step; ``after_grad(grad)`` runs before the reduction and returns the
        local stop flag. Returns (loss sum, batch weight, penalty, stop), global."""
        raise NotImplementedError

    def settle(self, contribution, stop, last_in_epoch):
        """After the loop has weighed the step's loss: it is already global here."""
        return contribution, stop

    def take_reductions(self):
        """Reductions since the last call (the per-epoch count in the metrics)."""
        done, self._taken = self.reductions - self._taken, self.reductions
        return done

    def optimizer_state(self, everywhere=False):
        """Collective: (scalars, full-length arrays); the arrays are valid on rank 0 (on every
        rank with ``everywhere``: elastic snapshots)."""
        return self.optimizer.state()

    def load_optimizer_state(self, scalars, arrays):
        self.optimizer.load_state(scalars, arrays)

    def state_bytes(self):
        return self.optimizer.state_bytes()

    def held_bytes(self):
        """Bytes of parameters, gradient buffer and optimizer state this rank holds."""
        return self.params.nbytes + self.buffer.nbytes + self.state_bytes()

    def describe(self):
        """What the start line says of the strategy beyond its name ("" for most)."""
        return ""

    def release(self):
        """Collective, at the end of a run: the parameters, in memory the caller may keep."""
        return self.params


def adopt_optimizer(optimizer, factory, n, lo, hi):
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
