"""What the end of an epoch decides: whether training stops and why (divergence, --loss-target,
scikit-learn's no-improvement rule, max epochs), with that rule's counter, the best loss or
validation score, and the learning rate of the next epoch. A query: the loop applies it.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np

from mpinn.parallel.agree import on_root


@dataclasses.dataclass(frozen=True)
class EpochDecision:
    reason: str | None                  # why training stops after this epoch, or None
    counted: bool = False               # the no-improvement rule ran (not after divergence or the loss target)
    no_improvement: int = 0             # the rule's counter after this epoch
    best_loss: float = math.inf
    best_validation_score: float = -math.inf
    is_best: bool = False               # early stopping: this epoch's weights score best so far
    learning_rate: float | None = None  # the optimizer's rate for the next epoch


def decide_epoch(cfg, loop, loss, score, params, optimizer, early_stopping):
    """The decision after the epoch ``loop`` (a LoopState) has just counted, of training loss
    ``loss`` (and validation ``score`` with early stopping). Reads, never changes, its arguments.

    With early stopping a non-finite loss is not the end, as in scikit-learn 1.9: the
    validation score is NaN, which never improves on the best one, and the best weights are
    restored at the end."""
    if not early_stopping and (not math.isfinite(loss) or not np.isfinite(params).all()):
        return EpochDecision("diverged")
    if cfg.loss_target is not None and loss <= cfg.loss_target:
        return EpochDecision("loss_target")
    best_loss, best_score, is_best = loop.best_loss, loop.best_validation_score, False
    if early_stopping:
        stalled = score < best_score + cfg.tol
        if score > best_score:
            best_score, is_best = score, True
    else:
        stalled = loss > best_loss - cfg.tol
        best_loss = min(best_loss, loss)
    no_improvement = loop.no_improvement + 1 if stalled else 0
    # The optimizer's own rules (nn/optim.py: epoch_end's schedule, trigger_stopping's answer to
    # a stall) asked of a shallow copy, which they change by rebinding its learning rate only.
    trial = copy.copy(optimizer)
    trial.epoch_end(loop.t)
    reason = None
    if no_improvement > cfg.n_iter_no_change:
        if trial.trigger_stopping():
            reason = "converged"
        else:
            no_improvement = 0
    if reason is None and loop.epoch >= cfg.epochs:
        reason = "max_epochs"
    return EpochDecision(reason, True, no_improvement, best_loss, best_score, is_best, trial.learning_rate)


def agreed_decision(comm, *args):
    """``decide_epoch(*args)`` as rank 0 makes it, on every rank (collective). Rank 0 decides
    from its floats and every rank applies that decision (the learning rate, the counters,
    whether these weights are the best), so ranks whose reductions differ in the last bits
    still make one decision and never drift apart."""
    return EpochDecision(**on_root(comm, lambda: dataclasses.asdict(decide_epoch(*args))))
