"""The `mpinn` command: one module per command, their shared helpers in common.py, the parser and
the exit codes in app.py. The only layer that prints for the user and ends the process.
May import every layer below: errors, atomic, options, nn, data, parallel, preprocessing, train, estimators, search."""


def main(argv=None):
    """The `mpinn` console script (setup.cfg): see app.main."""
    from mpinn.cli.app import main as run

    return run(argv)
