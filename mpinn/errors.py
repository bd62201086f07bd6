"""The exceptions that every rank raises together, so the job ends with one message.

InputError: raised wherever input is checked; the CLI prints one line and exits 2 on every
rank. JobError: a failure whose outcome ranks agreed on (exit 1, no abort). Anything else
that escapes is a bug or a fault on one rank and aborts the job. Warnings are raised on every
rank and shown by rank 0 alone (warnings_shown_by_rank0).
"""

import contextlib
import warnings


class InputError(ValueError):
    """Bad user input: a file, a dataset, an option or a value. The message names it."""

    exit_code = 2


class JobError(RuntimeError):
    """A failure every rank raises together (their decision was shared, e.g. by broadcast): the
    CLI reports it once and exits 1 without aborting; a script under mpiexec can catch it."""

    exit_code = 1


class CheckpointError(JobError):
    """Rank 0 could not write a checkpoint; raised on every rank (the older ones are intact)."""


@contextlib.contextmanager
def warnings_shown_by_rank0(rank):
    """Inside, a warning on a rank other than 0 is raised as usual (filters such as -W error,
    catch_warnings(record=True) and pytest.warns see it on every rank) but not displayed: the
    job shows each warning once, from rank 0, whatever the program's filters."""
    recording = getattr(warnings._showwarnmsg_impl, "__name__", "") != "_showwarnmsg_impl"
    if rank == 0 or recording:  # a recorder (catch_warnings(record=True)) keeps what it catches
        yield
        return
    shown = warnings.showwarning
    warnings.showwarning = lambda *args, **kwargs: None
    try:
        yield
    finally:
        warnings.showwarning = shown
