"""`mpinn train|search|eval|predict|data|info|plot|export`: the command line (the `train`,
`search` and `data` subcommands are cli_train.py, cli_search.py and cli_data.py).

Bad input ends every rank with one line on stderr (printed by rank 0) and exit code 2, before
anything is written. Any other exception on any rank aborts the whole job, so a failure
never leaves the other ranks hanging in a collective.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mpinn import __version__
from mpinn.errors import InputError, JobError

EXIT_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # as mpinn.faults; resumable: run again with --resume
EXIT_INTERRUPTED = 130  # as mpinn.faults: SIGINT (Ctrl-C); `train` checkpoints first, resumable too
_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MPI_LOCALRANKID", "SLURM_PROCID")
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _env_int(names, default):
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return default


def env_rank():
    """This process's rank as the launcher set it, known before MPI is initialised."""
    return _env_int(_RANK_VARS, 0)


def limit_blas_threads():
    """One BLAS thread per rank under a launcher, unless the user chose a count.

    N ranks each running N BLAS threads oversubscribe the cores; set OMP_NUM_THREADS (e.g.
    to cpus-per-task) to run hybrid MPI x threads on purpose. Must run before numpy loads.
    """
    if _env_int(_SIZE_VARS, 1) > 1 and not any(v in os.environ for v in _THREAD_VARS):
        for name in _THREAD_VARS:
            os.environ[name] = "1"


def say(*args, file=None, end="\n"):
    """Print on rank 0 only."""
    if env_rank() == 0:
        print(*args, file=file or sys.stdout, end=end, flush=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        say(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)


def build_parser():
    # `mpinn train` and `mpinn data ...` live in their own modules, which import this one.
    from mpinn.cli.data import add_data_commands
    from mpinn.cli.search import add_search_command
    from mpinn.cli.train import add_train_command

    parser = _Parser(prog="mpinn", description="Data-parallel MLP training on MPI ranks, data in HDF5.")
    parser.add_argument("--version", action="version", version=f"mpinn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_train_command(sub)
    add_search_command(sub)

    p = sub.add_parser("eval", help="metrics of a checkpoint on a labelled HDF5 file")
    p.add_argument("--model", required=True, help="checkpoint file or checkpoint directory")
    p.add_argument("--data", required=True)
    p.add_argument("--x-name", default="X")
    p.add_argument("--y-name", default="y")
    p.add_argument("--rows", choices=["test", "train", "all"],
                   help="rows of --data to score: test (default when the model was trained with "
                        "--test-fraction on a file of this size: the held-out rows), train or all (otherwise)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (full precision)")
    p.add_argument("--plot", help="also write the confusion matrix as a PNG (classifiers; needs matplotlib)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="write predictions of a checkpoint to HDF5")
    p.add_argument("--model", required=True, help="checkpoint file or checkpoint directory")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="output HDF5 file (datasets y_pred, and proba for classifiers)")
    p.add_argument("--x-name", default="X")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("info", help="versions, MPI library and ranks")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("plot", help="plot a metrics file (loss, test metric, samples/s per epoch) to PNG")
    p.add_argument("metrics", help="JSONL or CSV written by `mpinn train --metrics`")
    p.add_argument("-o", "--out", default="curves.png", help="output PNG (default curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("export", help="export a checkpoint to npz, onnx or a scikit-learn estimator")
    p.add_argument("model", help="checkpoint file or checkpoint directory")
    p.add_argument("--format", required=True, choices=["npz", "onnx", "sklearn"])
    p.add_argument("-o", "--out", help="output file (default: in the current directory, the checkpoint "
                   "directory's or file's name with .npz/.onnx/.joblib)")
    p.set_defaults(func=cmd_export)

    add_data_commands(sub)
    return parser


# ---- commands ------------------------------------------------------------------------


def _check_output_file(path, what):
    if os.path.isdir(path):
        raise InputError(f"{what}: {path} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise InputError(f"{what}: cannot write {path} (directory missing or not writable)")


def _print_report(report, as_json):
    """One JSON object (full precision), or one `key: value` line per entry (lists and dicts as
    JSON), floats shortened for reading."""
    if as_json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        if isinstance(value, float):  # as the training summary prints its test metrics
            text = f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4g}"
        else:
            text = json.dumps(_short(value)) if isinstance(value, (dict, list)) else value
        print(f"{key}: {text}")


def _short(value):
    """Floats to 4 decimals (4 significant digits below 0.001), inside lists and dicts too."""
    if isinstance(value, float):
        return round(value, 4) if value == 0 or abs(value) >= 1e-3 else float(f"{value:.4g}")
    if isinstance(value, (list, tuple)):
        return [_short(v) for v in value]
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    return value


def _problem_for_model(fitted, path, x_name, y_name, comm, with_y=True):
    """This rank's shard of a file, checked against a fitted model."""
    import h5py
    import numpy as np

    from mpinn.data import hdf5 as datamod
    from mpinn.data.partition import make_shard
    from mpinn.train.problem import Problem, decide_on_root

    info = datamod.DataInfo(**decide_on_root(
        comm, lambda: datamod.inspect(path, x_name, y_name, require_y=with_y).to_json()))
    if info.n_features != fitted.n_features_in_:
        raise InputError(f"{path}: {info.n_features} features but the model expects {fitted.n_features_in_}")
    shard = make_shard(info.n_rows, comm.rank, comm.size, "block")
    with h5py.File(path, "r") as f:
        X, y = datamod.read_shard(f, info, shard, fitted.coefs_[0].dtype, with_y=with_y)
    classes = None if fitted.classes_ is None else np.asarray(fitted.classes_)
    return Problem(task=fitted.task, X=X, y=y, shard=shard, train_rows=np.zeros(0, np.int64),
                   n_features=info.n_features, classes=classes, class_names=fitted.class_names), info


def cmd_eval(args):
    import numpy as np

    from mpinn.train.checkpoint import read_checkpoint, recorded_split
    from mpinn.parallel.comm import world
    from mpinn.train.evaluation import rows_to_score
    from mpinn.train.problem import collective_check, decide_on_root, labels_as_classes
    from mpinn.train.loop import evaluate

    comm = world()
    fitted = _load_on_all(comm, args.model)
    split = decide_on_root(comm, lambda: recorded_split(read_checkpoint(args.model)[0]))
    problem, info = _problem_for_model(fitted, args.data, args.x_name, args.y_name, comm)
    rows, chosen, note = rows_to_score(args.rows, split, info.n_rows, args.data)
    if chosen is not None:  # this rank's share of the chosen rows
        local = problem.shard.local_positions(chosen)[1]
        problem.X, problem.y = problem.X[local], problem.y[local]
    if problem.task == "classify":
        unseen = np.setdiff1d(labels_as_classes(problem.y, problem.classes), problem.classes)
        collective_check(comm, f"{args.data}: labels {unseen[:5].tolist()} are not classes of the model"
                         if len(unseen) else None)
    if args.plot:  # checked on every rank, before any work
        if problem.task != "classify":
            raise InputError("eval --plot draws a confusion matrix: classifiers only")
        from mpinn.cli.plot import _pyplot, plot_confusion

        _pyplot()
        decide_on_root(comm, lambda: _check_output_file(args.plot, "--plot"))
    report = evaluate(fitted._model, fitted._params, problem, fitted.scale_features(problem.X), problem.y, comm)
    if comm.rank == 0 and args.plot:
        plot_confusion(report, args.plot)
    if comm.rank == 0:
        scored = {"rows": rows, "n_rows": info.n_rows if chosen is None else len(chosen)} if args.json \
            else {"rows": f"{rows} ({note})"}
        _print_report({**scored, **report}, args.json)
    return 0


def cmd_predict(args):
    from mpinn.parallel.comm import world
    from mpinn.train.predict import predict_to_file
    from mpinn.train.problem import decide_on_root

    comm = world()
    fitted = _load_on_all(comm, args.model)
    decide_on_root(comm, lambda: _check_output_file(args.out, "--out"))
    n = predict_to_file(fitted, args.data, args.x_name, args.out, comm)  # in rounds: see predict.py
    if comm.rank == 0:
        print(f"wrote {n} predictions to {args.out}")
    return 0


def _load_on_all(comm, path):
    """Every rank loads the checkpoint, after rank 0 has confirmed it is valid."""
    from mpinn.train.checkpoint import load_model
    from mpinn.train.problem import decide_on_root

    decide_on_root(comm, lambda: load_model(path) and None)
    return load_model(path)


def cmd_info(args):
    import h5py
    import numpy as np

    from mpinn.parallel.comm import library_info, world

    comm = world()
    if comm.rank == 0:
        info = {"mpinn": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
                "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, **library_info(),
                "ranks": comm.size, "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_plot(args):
    from mpinn.cli.plot import plot_metrics

    if env_rank() == 0:
        plot_metrics(args.metrics, args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_export(args):
    from mpinn.estimators.export import export

    if env_rank() == 0:
        import mpinn

        model = mpinn.load(args.model)
        out = args.out or default_export_name(args.model, args.format)
        export(model, out, args.format)
        print(f"wrote {out} (from {_checkpoint_file(args.model)})")
    return 0


def default_export_name(model_path, fmt):
    """In the current directory, named after the checkpoint directory (or file): never inside
    the checkpoint directory, where pruning (--keep-checkpoints) would strand it."""
    name = os.path.basename(os.path.normpath(os.path.abspath(model_path)))
    if not os.path.isdir(model_path):
        name = os.path.splitext(name)[0]
    return name + {"npz": ".npz", "onnx": ".onnx", "sklearn": ".joblib"}[fmt]


def _checkpoint_file(path):
    from mpinn.train.checkpoint import resolve

    return resolve(path)


def main(argv=None):
    limit_blas_threads()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        say(f"mpinn: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except JobError as exc:  # raised on every rank together: one line, no abort
        say(f"mpinn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside `train`'s loop (which stops all ranks at one step)
        say("mpinn: interrupted", file=sys.stderr)
        if "mpi4py.MPI" in sys.modules and _env_int(_SIZE_VARS, 1) > 1:
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
