"""The state a training run carries across runs: the loop's counters and curves (LoopState),
and the whole of it as a checkpoint stores it, so that a resumed run continues bit for bit.

The Trainer's ``checkpoint_state`` / ``restore`` call these functions with the parts of the run
they store; checkpoint.py writes and reads the (JSON scalars, arrays) pair they exchange.
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
    last_params: np.ndarray | None = None  # early stopping: the last epoch's weights, when the run ended on the best's

    SCALARS = ("epoch", "t", "step_in_epoch", "accumulated", "global_step", "no_improvement", "finished",
               "history")


def checkpoint_state(loop, *, params, sync, random_state, schedule, balancing, n_train, batch_size,
                     early_stopping, extra_state=None, everywhere=False):
    """Collective: (JSON scalars, arrays) that make a resumed run continue bit for bit, on
    any rank count and in either sync mode (optimizer state whole). Valid on rank 0.

    ``sync`` is the step strategy (None for L-BFGS), ``balancing`` the rebalancing.LoadBalancing,
    ``extra_state()`` JSON stored beside (the estimators'). ``everywhere``: valid on every rank."""
    opt_scalars, opt_arrays = sync.optimizer_state(everywhere=everywhere) if sync else ({}, {})
    kind, key, pos, has_gauss, gauss = random_state.get_state()
    scalars = {name: getattr(loop, name) for name in LoopState.SCALARS}
    scalars.update({"best_loss": None if math.isinf(loop.best_loss) else loop.best_loss,
                    "optimizer": opt_scalars, "n_train": n_train, "batch_size": batch_size,
                    "rng": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}})
    scalars["schedule"] = schedule.scalars()
    arrays = {"params": params, "rng/key": key,
              **{f"schedule/{k}": v for k, v in schedule.state().items()},
              "loss_curve": np.asarray(loop.loss_curve, dtype=np.float64),
              **{f"optimizer/{k}": v for k, v in opt_arrays.items()}}
    if extra_state is not None:
        scalars["estimator"] = extra_state()
    balance = balancing.state()  # rebalancing.py
    if balance is not None:  # the shares apply again on the same rank count
        scalars["balance"] = balance
    if early_stopping:  # so a resumed run stops, and ends on the weights, an uninterrupted one would
        scalars["validation"] = {"scores": loop.validation_scores, "loss_curve": loop.validation_loss_curve,
                                 "best": None if math.isinf(loop.best_validation_score) else loop.best_validation_score}
        arrays["validation/best_params"] = loop.best_params
        if loop.last_params is not None:  # a run continued to more epochs goes on from these
            arrays["validation/last_params"] = loop.last_params
    return scalars, arrays


def restore(loop, scalars, arrays, *, params, sync, random_state, schedule, balancing, n_train, batch_size,
            early_stopping, ranks):
    """Continue from ``checkpoint_state()`` as saved by any number of ranks: ``loop``,
    ``params`` and the other parts (checkpoint_state's, here on ``ranks`` ranks) in place."""
    if scalars["n_train"] != n_train:
        raise InputError(f"checkpoint was trained on {scalars['n_train']} rows, this data has {n_train}")
    saved_batch = scalars.get("batch_size", batch_size)
    if scalars["step_in_epoch"] and saved_batch != batch_size:
        raise InputError(f"--resume: the checkpoint stopped part-way through an epoch of batches of {saved_batch}"
                         f" rows; with {ranks} rank(s) the batch is {batch_size} (--batch-per-rank):"
                         " resume on the same rank count, or from an end-of-epoch checkpoint")
    schedule.check_resume(scalars.get("schedule"), mid_epoch=bool(scalars["step_in_epoch"]))
    params[...] = arrays["params"]
    if sync:
        sync.load_optimizer_state(scalars["optimizer"], {k.split("/", 1)[1]: v for k, v in arrays.items()
                                                         if k.startswith("optimizer/")})
    rng = scalars["rng"]
    random_state.set_state((rng["kind"], arrays["rng/key"], rng["pos"], rng["has_gauss"], rng["gauss"]))
    schedule.load_state({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("schedule/")},
                        scalars.get("schedule"))
    for name in LoopState.SCALARS:
        setattr(loop, name, scalars[name])
    loop.best_loss = math.inf if scalars["best_loss"] is None else scalars["best_loss"]
    loop.loss_curve = arrays["loss_curve"].tolist()
    validation = scalars.get("validation")
    if validation is not None and early_stopping:
        loop.validation_scores = list(validation["scores"])
        loop.validation_loss_curve = list(validation["loss_curve"])
        loop.best_validation_score = -math.inf if validation["best"] is None else validation["best"]
        loop.best_params = np.array(arrays["validation/best_params"], dtype=params.dtype)
        last = arrays.get("validation/last_params")
        loop.last_params = None if last is None else np.array(last, dtype=params.dtype)
    balancing.restore(scalars.get("balance"))  # last: moving the rows rebuilds the schedule
