"""`mpinn train|search|eval|predict|data|info|plot|export`: the command line (one module per
command beside this one, their shared helpers in common.py).

Bad input ends every rank with one line on stderr (printed by rank 0) and exit code 2, before
anything is written. Any other exception on any rank aborts the whole job, so a failure
never leaves the other ranks hanging in a collective.
"""

from __future__ import annotations

import os
import sys

from mpinn import __version__
from mpinn.cli.common import EXIT_DIVERGED, EXIT_INPUT, EXIT_INTERRUPTED, Parser, env_rank, launched_size, \
    limit_blas_threads, say
from mpinn.cli.data import add_data_commands
from mpinn.cli.evaluate import add_eval_command
from mpinn.cli.export import add_export_command
from mpinn.cli.info import add_info_command
from mpinn.cli.plot import add_plot_command
from mpinn.cli.predict import add_predict_command
from mpinn.cli.search import add_search_command
from mpinn.cli.train import add_train_command
from mpinn.errors import InputError, JobError, warnings_shown_by_rank0
from mpinn.parallel.faults import Interrupted


def build_parser():
    parser = Parser(prog="mpinn", description="Data-parallel MLP training on MPI ranks, data in HDF5.")
    parser.add_argument("--version", action="version", version=f"mpinn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (add_train_command, add_search_command, add_eval_command, add_predict_command, add_info_command,
                add_plot_command, add_export_command, add_data_commands):
        add(sub)
    return parser


def main(argv=None):
    code = _main(argv)
    if "mpi4py.MPI" in sys.modules:
        from mpinn.parallel.comm import ranks_were_lost

        if ranks_were_lost():  # end here, without MPI_Finalize (comm.ranks_were_lost); files are closed
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


def _main(argv=None):
    limit_blas_threads()
    args = build_parser().parse_args(argv)
    try:
        with warnings_shown_by_rank0(env_rank()):  # a warning every rank raises is shown once
            return args.func(args)
    except InputError as exc:
        say(f"mpinn: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except JobError as exc:  # raised on every rank together: one line, no abort
        say(f"mpinn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:  # Ctrl-C that every rank acted on together (a search): no abort
        say(f"mpinn: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # Ctrl-C outside `train`'s loop (which stops all ranks at one step)
        say("mpinn: interrupted", file=sys.stderr)
        if "mpi4py.MPI" in sys.modules and launched_size() > 1:
            from mpinn.parallel.comm import world

            world().abort(EXIT_INTERRUPTED)  # another rank may be waiting for this one in a collective
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - any other failure must end the whole job
        from mpinn.train.loop import TrainingDiverged

        if isinstance(exc, TrainingDiverged):
            say(f"mpinn: error: {exc}", file=sys.stderr)
            return EXIT_DIVERGED
        print(f"mpinn: rank {env_rank()}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if "mpi4py.MPI" in sys.modules:
            from mpinn.parallel.comm import world

            world().abort(1)
        return 1
