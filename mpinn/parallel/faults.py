"""Preemption signals and injected faults. No MPI here.

Preemption: SIGTERM or SIGUSR1 (Slurm's `--signal=USR1@60`), and SIGINT (Ctrl-C), only set a
flag. The training loop carries the flag in the gradient Allreduce buffer, so every rank learns
at the same step that some rank was signalled, finishes that step, checkpoints and exits with
EXIT_PREEMPTED (EXIT_INTERRUPTED when the only signal was SIGINT). A signal that arrives before
training (while the data loads) is acted on before the first step. Each run resets the flag
(``Preemption.watch``), so a signal to one fit does not stop the next one in the same process;
a run inside another (a search's fits) shares the outer run's flag, so the search stops too.

Fault injection, for tests: MPINN_FAULT="RANK:STEP:KIND" makes rank RANK, at global step STEP
(1-based, counted over the whole run including resumed parts), do KIND:
  raise  raise RuntimeError           kill  SIGKILL itself
  nan    poison its gradient (NaN)    term  send itself SIGTERM (a preemption)
  usr1   send itself SIGUSR1          exit  os._exit(1) without a word
  nospace  its next checkpoint write fails with ENOSPC (as a full disk would)
  int    send itself SIGINT (Ctrl-C)
STEP 0 means: once the data is loaded, before the first step (a signal during loading); STEP
`recovery`: while the survivors of another rank's death recover (elastic training).
Several faults may be given separated by ';'.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from mpinn.errors import JobError

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again", the job is resumable
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C; also resumable
FAULT_ENV = "MPINN_FAULT"
KINDS = ("raise", "kill", "nan", "term", "usr1", "exit", "nospace", "int")
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(JobError):
    """An estimator's fit stopped by SIGTERM or SIGUSR1 (a scheduler's preemption), raised on
    every rank at the same step, after the checkpoint (if one is configured) was written."""

    exit_code = EXIT_PREEMPTED


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) acted on by every rank together, after the finished work is saved: a
    KeyboardInterrupt to Python, which the CLI turns into exit code 130 without an abort."""


class Preemption:
    """Set by a signal handler; read once per step by the training loop.

    Class-level because a signal handler is process-wide; ``watch`` resets it for each run.
    """

    requested = False
    _depth = 0           # watches open: only the outermost installs handlers and resets
    signal_name = None   # the last signal this process received
    names = frozenset()  # every signal it received since the reset

    @classmethod
    def install(cls, signals=(signal.SIGTERM, signal.SIGUSR1)):
        """For the rest of the process (`mpinn train` passes SIGNALS: SIGINT too)."""
        for sig in signals:
            signal.signal(sig, cls._handler)

    @classmethod
    @contextlib.contextmanager
    def watch(cls, signals=SIGNALS):
        """For one run: clear the flag, let ``signals`` set it, then put back the handlers that
        were there before. Outside the main thread Python cannot install handlers: the run
        then keeps the process's own (the flag is still cleared)."""
        cls._depth += 1
        try:
            if cls._depth > 1:  # inside another run's watch (a fit inside a search): its flag, its handlers
                yield cls
                return
            cls.reset()
            previous = {}
            if threading.current_thread() is threading.main_thread():
                for sig in signals:
                    previous[sig] = signal.signal(sig, cls._handler)
            try:
                yield cls
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, signal.SIG_DFL if handler is None else handler)
                cls.reset()  # acted on by this run (or too late for it): never carried into the next
        finally:
            cls._depth -= 1

    @classmethod
    def inside_another_run(cls):
        """True in a run watched inside another (a search's fit): the outer run acts on the signal,
        so the inner one must end as interrupted, not hand back a model trained so far."""
        return cls._depth > 1

    @classmethod
    def _handler(cls, signum, frame):
        cls.requested = True
        cls.signal_name = signal.Signals(signum).name
        cls.names = cls.names | {cls.signal_name}

    @classmethod
    def reset(cls):
        cls.requested = False
        cls.signal_name = None
        cls.names = frozenset()

    @classmethod
    def received(cls):
        """This rank's signals as 0/1 flags in SIGNAL_NAMES order; summed over the ranks, they
        tell every rank the same story (``verdict``)."""
        return [float(name in cls.names) for name in SIGNAL_NAMES]


SIGNAL_NAMES = ("SIGTERM", "SIGUSR1", "SIGINT")


def verdict(counts):
    """(exit code, what happened, which signals) from ``received`` summed over the ranks: SIGINT
    alone is the user's Ctrl-C; SIGTERM or SIGUSR1 anywhere is a preemption (a scheduler's)."""
    names = [name for name, count in zip(SIGNAL_NAMES, counts) if count > 0]
    if names == ["SIGINT"]:
        return EXIT_INTERRUPTED, "interrupted", "SIGINT"
    return EXIT_PREEMPTED, "preempted", ", ".join(n for n in names if n != "SIGINT") or "a signal"


def parse_faults(text, rank):
    """{step: kind} of the faults aimed at ``rank``."""
    faults = {}
    for item in filter(None, (text or "").split(";")):
        try:
            r, step, kind = item.split(":")
            r, step = int(r), (step if step == "recovery" else int(step))
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
    if kind == "int":
        os.kill(os.getpid(), signal.SIGINT)
    if kind == "nospace":
        _write_fault[0] = True


_write_fault = [False]


def take_write_fault():
    """True once after a 'nospace' fault: the checkpoint writer then fails as on a full disk."""
    pending, _write_fault[0] = _write_fault[0], False
    return pending
