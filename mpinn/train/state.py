"""The state a training run carries across runs: the loop's counters and curves (LoopState),
and the whole of it as a checkpoint stores it, so that a resumed run continues bit for bit.

The Trainer's ``checkpoint_state`` / ``restore`` are these functions; checkpoint.py writes and
reads the (JSON scalars, arrays) pair they exchange.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mpinn.errors import InputError


@dataclasses.dataclass
class LoopState:
    """Everything the loop advances; what a checkpoint or an estimator carries across runs."""

    epoch: int = 0
    t: int = 0                    # samples seen, as sklearn's t_
    step_in_epoch: int = 0        # steps done in the current, unfinished epoch
    accumulated: float = 0.0      # that epoch's loss so far (sklearn's accumulated_loss)
    global_step: int = 0          # steps over the whole run, resumed parts included
    loss_curve: list = dataclasses.field(default_factory=list)
    history: list = dataclasses.field(default_factory=list)
    best_loss: float = math.inf
    no_improvement: int = 0
    finished: str | None = None   # why training ended, once it has (kept across resume)
    validation_scores: list = dataclasses.field(default_factory=list)
    validation_loss_curve: list = dataclasses.field(default_factory=list)
    best_validation_score: float = -math.inf
    best_params: np.ndarray | None = None  # early stopping: restored at the end

    SCALARS = ("epoch", "t", "step_in_epoch", "accumulated", "global_step", "no_improvement", "finished",
               "history")


def checkpoint_state(trainer):
    """Collective: (JSON scalars, arrays) that make a resumed run continue bit for bit, on
    any rank count and in either sync mode (optimizer state whole). Valid on rank 0."""
    loop = trainer.loop
    opt_scalars, opt_arrays = trainer.sync.optimizer_state() if trainer.sync else ({}, {})
    kind, key, pos, has_gauss, gauss = trainer.random_state.get_state()
    scalars = {name: getattr(loop, name) for name in LoopState.SCALARS}
    scalars.update({"best_loss": None if math.isinf(loop.best_loss) else loop.best_loss,
                    "optimizer": opt_scalars, "n_train": trainer.n_train, "batch_size": trainer.batch_size,
                    "rng": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}})
    scalars["schedule"] = trainer.schedule.scalars()
    arrays = {"params": trainer.params, "rng/key": key,
              **{f"schedule/{k}": v for k, v in trainer.schedule.state().items()},
              "loss_curve": np.asarray(loop.loss_curve, dtype=np.float64),
              **{f"optimizer/{k}": v for k, v in opt_arrays.items()}}
    if trainer.extra_state is not None:
        scalars["estimator"] = trainer.extra_state()
    balance = trainer.balancing.state()  # rebalancing.py
    if balance is not None:  # the shares apply again on the same rank count
        scalars["balance"] = balance
    if trainer.early_stopping:  # so a resumed run stops, and ends on the weights, an uninterrupted one would
        scalars["validation"] = {"scores": loop.validation_scores, "loss_curve": loop.validation_loss_curve,
                                 "best": None if math.isinf(loop.best_validation_score) else loop.best_validation_score}
        arrays["validation/best_params"] = loop.best_params
    return scalars, arrays


def restore(trainer, scalars, arrays):
    """Continue ``trainer`` from ``checkpoint_state()`` as saved by any number of ranks."""
    if scalars["n_train"] != trainer.n_train:
        raise InputError(f"checkpoint was trained on {scalars['n_train']} rows, this data has {trainer.n_train}")
    saved_batch = scalars.get("batch_size", trainer.batch_size)
    if scalars["step_in_epoch"] and saved_batch != trainer.batch_size:
        raise InputError(f"--resume: the checkpoint stopped part-way through an epoch of batches of {saved_batch}"
                         f" rows; with {trainer.comm.size} rank(s) the batch is {trainer.batch_size} (--batch-per-rank):"
                         " resume on the same rank count, or from an end-of-epoch checkpoint")
    trainer.schedule.check_resume(scalars.get("schedule"), mid_epoch=bool(scalars["step_in_epoch"]))
    trainer.params[...] = arrays["params"]
    if trainer.sync:
        trainer.sync.load_optimizer_state(scalars["optimizer"], {k.split("/", 1)[1]: v for k, v in arrays.items()
                                                                 if k.startswith("optimizer/")})
    rng = scalars["rng"]
    trainer.random_state.set_state((rng["kind"], arrays["rng/key"], rng["pos"], rng["has_gauss"], rng["gauss"]))
    trainer.schedule.load_state({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("schedule/")},
                                scalars.get("schedule"))
    loop = trainer.loop
    for name in LoopState.SCALARS:
        setattr(loop, name, scalars[name])
    loop.best_loss = math.inf if scalars["best_loss"] is None else scalars["best_loss"]
    loop.loss_curve = arrays["loss_curve"].tolist()
    validation = scalars.get("validation")
    if validation is not None and trainer.early_stopping:
        loop.validation_scores = list(validation["scores"])
        loop.validation_loss_curve = list(validation["loss_curve"])
        loop.best_validation_score = -math.inf if validation["best"] is None else validation["best"]
        loop.best_params = np.array(arrays["validation/best_params"], dtype=trainer.params.dtype)
    trainer.balancing.restore(scalars.get("balance"))
