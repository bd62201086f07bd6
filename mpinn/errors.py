"""The one exception type for bad user input.

Raised anywhere input is checked; the CLI turns it into a single line on stderr and exit
code 2 on every rank. Everything else that escapes is a bug or a fault and aborts the job.
"""


class InputError(ValueError):
    """Bad user input: a file, a dataset, an option or a value. The message names it."""

    exit_code = 2
