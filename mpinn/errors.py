"""The exceptions that every rank raises together, so the job ends with one message.

InputError: raised wherever input is checked; the CLI prints one line and exits 2 on every
rank. JobError: a failure whose outcome ranks agreed on (exit 1, no abort). Anything else
that escapes is a bug or a fault on one rank and aborts the job.
"""


class InputError(ValueError):
    """Bad user input: a file, a dataset, an option or a value. The message names it."""

    exit_code = 2


class JobError(RuntimeError):
    """A failure every rank raises together (their decision was shared, e.g. by broadcast): the
    CLI reports it once and exits 1 without aborting; a script under mpiexec can catch it."""

    exit_code = 1


class CheckpointError(JobError):
    """Rank 0 could not write a checkpoint; raised on every rank (the older ones are intact)."""
