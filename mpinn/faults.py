"""Preemption signals and injected faults. No MPI here.

Preemption: SIGTERM or SIGUSR1 (Slurm's `--signal=USR1@60`) only sets a flag. The training
loop carries the flag in the gradient Allreduce buffer, so every rank learns at the same step
that some rank was signalled, finishes that step, checkpoints and exits with EXIT_PREEMPTED.

Fault injection, for tests: MPINN_FAULT="RANK:STEP:KIND" makes rank RANK, at global step STEP
(1-based, counted over the whole run including resumed parts), do KIND:
  raise  raise RuntimeError           kill  SIGKILL itself
  nan    poison its gradient (NaN)    term  send itself SIGTERM (a preemption)
  usr1   send itself SIGUSR1          exit  os._exit(1) without a word
Several faults may be given separated by ';'.
"""

from __future__ import annotations

import os
import signal

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again", the job is resumable
FAULT_ENV = "MPINN_FAULT"
KINDS = ("raise", "kill", "nan", "term", "usr1", "exit")


class Preemption:
    """Set by a signal handler; read once per step by the training loop."""

    requested = False
    signal_name = None

    @classmethod
    def install(cls, signals=(signal.SIGTERM, signal.SIGUSR1)):
        for sig in signals:
            signal.signal(sig, cls._handler)

    @classmethod
    def _handler(cls, signum, frame):
        cls.requested = True
        cls.signal_name = signal.Signals(signum).name

    @classmethod
    def reset(cls):
        cls.requested = False
        cls.signal_name = None


def parse_faults(text, rank):
    """{step: kind} of the faults aimed at ``rank``."""
    faults = {}
    for item in filter(None, (text or "").split(";")):
        try:
            r, step, kind = item.split(":")
            r, step = int(r), int(step)
        except ValueError:
            raise ValueError(f"{FAULT_ENV}: expected RANK:STEP:KIND, got {item!r}") from None
        if kind not in KINDS:
            raise ValueError(f"{FAULT_ENV}: unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        if r == rank:
            faults[step] = kind
    return faults


def inject(kind, rank, step, grad):
    """Carry out one injected fault."""
    if kind == "raise":
        raise RuntimeError(f"injected fault at step {step}")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "exit":
        os._exit(1)
    if kind == "nan":
        grad[...] = float("nan")
    if kind == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    if kind == "usr1":
        os.kill(os.getpid(), signal.SIGUSR1)
