"""`mpinn train` and `mpinn search` when a rank dies: elastic mode's choice, the survivors'
communicator, and train's recovery loop that continues on them (train/elastic.py holds the
snapshots it continues from; cli/search.py continues a search from its task log)."""

from __future__ import annotations

import sys
import time

from mpinn.errors import InputError


class Run:
    """What one `mpinn train` keeps across elastic recoveries: the launched ranks still alive
    (by their first rank), the scaling it ran with, whether rank 0's tracking run is alive."""

    def __init__(self, cfg, launched):
        self.cfg, self.launched = cfg, launched
        self.scale = cfg.scale
        self.tracking = True


def fit(trainer):
    """Train, and close the trainer's data file however it ends."""
    try:
        trainer.fit()
    finally:
        trainer.problem.close()
    return trainer


def elastic_mode(comm, cfg, asked):
    """(on, why not): elastic where the MPI can survive a rank's death (ULFM) and the run's
    strategy can be rebuilt on fewer ranks; --elastic where it cannot is exit 2."""
    on, why = comm.elastic_support()
    if on and cfg.sync == "shm":
        on, why = False, "--sync shm"
    elif on and cfg.solver == "lbfgs":
        on, why = False, "--solver lbfgs"
    if asked and not on:
        hint = "" if why.startswith("--") else "; it needs Open MPI 5 started with `mpirun --with-ft ulfm`"
        raise InputError(f"--elastic: this run cannot survive a rank's death ({why}){hint} (docs/reliability.md, "
                         "\"Elastic training\")")
    return on, why


def continue_on_survivors(comm, launched, agreed=False):
    """Collective over the survivors of a rank's death: revoke ``comm`` (ranks still inside a
    collective learn of it too), meet in an agreement, shrink. The survivors' communicator
    becomes world(). Returns (it, the launched ranks lost, the launched ranks kept) where
    ``launched`` names the ranks of ``comm`` as first launched.

    ``agreed``: this rank has just been through that agreement (it finished its work and the
    closing ``agree_all(True)`` said no): a rank that failed meets it with its ``agree_all(False)``
    here, so each survivor takes part in exactly one agreement before the shrink."""
    from mpinn.parallel.comm import replace_world

    comm.revoke()
    if not agreed:
        comm.agree_all(False)  # meets the survivors that finished and wait in their closing agreement
    failed, (comm, lost) = comm, comm.shrink()
    failed.free()
    replace_world(comm)
    lost = [launched[r] for r in lost]
    return comm, lost, [r for r in launched if r not in lost]


def lost_words(lost):
    return f"rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))}"


def fit_elastic(run, comm, trainer, snapshots, build, min_ranks):
    """Train; when a rank dies, continue on the survivors from the newest snapshot all of them
    hold (train/elastic.py), as often as it happens. Returns (the final comm, the trainer)."""
    from mpinn.parallel.faults import EXIT_PREEMPTED, inject
    from mpinn.train.elastic import truncate_metrics

    cfg, failed_at, agreed = run.cfg, None, False
    while True:
        try:
            if failed_at is not None:
                started, (epoch, step) = time.perf_counter(), failed_at
                failed_at = None
                comm, lost, run.launched = continue_on_survivors(comm, run.launched, agreed)
                if "recovery" in trainer.faults:  # tests: a death while the survivors recover
                    inject(trainer.faults.pop("recovery"), comm.rank, "recovery", None)
                run.tracking = run.tracking and 0 not in lost  # rank 0's tracking run died with it
                key, scalars, arrays, scaler = snapshots.agreed(comm)
                trainer = build(comm, (key, scalars, arrays, scaler))
                seconds = time.perf_counter() - started
                line = (f"{lost_words(lost)} lost at epoch {epoch} step {step}; continuing on {comm.size} rank(s) "
                        f"(recovery {seconds:.2f} s, from epoch {trainer.epoch} step {trainer.step_in_epoch})")
                event = {"ranks": lost, "epoch": epoch, "step": step, "continued_on": comm.size,
                         "replayed_from": {"epoch": trainer.epoch, "step": trainer.step_in_epoch},
                         "recovery_seconds": seconds}
                trainer.note_in_metrics("rank_lost", event)
                if comm.rank == 0:
                    if cfg.metrics:
                        truncate_metrics(cfg.metrics, trainer.epoch)
                    print(f"mpinn: {line}", file=sys.stderr, flush=True)
                if comm.size < min_ranks:
                    trainer.stop_below_min_ranks(min_ranks, EXIT_PREEMPTED)
                    return comm, trainer
            fit(trainer)
            # Uniform even under failures: every survivor leaves here, or every one recovers.
            if comm.agree_all(True):
                return comm, trainer
            failed_at, agreed = (trainer.epoch, trainer.step_in_epoch), True
        except BaseException as exc:
            if not comm.is_process_failure(exc):
                raise
            failed_at, agreed = (trainer.epoch, trainer.step_in_epoch), False
