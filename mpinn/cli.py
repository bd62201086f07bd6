"""`mpinn train|eval|predict|data|info`: the command line.

Bad input ends every rank with one line on stderr (printed by rank 0) and exit code 2, before
anything is written. Any other exception on any rank aborts the whole job, so a failure
never leaves the other ranks hanging in a collective.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .errors import InputError

EXIT_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # as mpinn.faults; resumable: run again with --resume
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


def _train_args(p):
    """Options of `mpinn train`. No argparse defaults: an option absent from the command line
    is absent from the namespace, so --config values apply unless a flag overrides them; the
    defaults themselves live in config.TrainConfig."""
    p.add_argument("--config", help="TOML file of options (keys are the long option names); flags override it")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration as TOML and exit")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="training data, HDF5 with datasets X and y (required, here or in --config)")
    g.add_argument("--test-data", help="held-out test data, same layout")
    g.add_argument("--test-fraction", type=float, help="hold out this fraction of --data (seeded, N-independent)")
    g.add_argument("--x-name", help="feature dataset name (default X)")
    g.add_argument("--y-name", help="target dataset name (default y)")
    g.add_argument("--task", choices=["auto", "classify", "regress"],
                   help="auto (default): integer or string 1-D targets classify, others regress")
    g = p.add_argument_group("model and optimizer (defaults as sklearn's MLPClassifier)")
    g.add_argument("--hidden", help="hidden layer sizes, e.g. 64,32 (default 100)")
    g.add_argument("--activation", help="relu (default), tanh, logistic or identity")
    g.add_argument("--solver", help="gd (w -= lr*grad), sgd (momentum) or adam (default)")
    g.add_argument("--lr", type=float, help="initial learning rate (default 0.001)")
    g.add_argument("--lr-schedule", help="constant (default), invscaling or adaptive (sgd)")
    g.add_argument("--power-t", type=float, help="exponent for invscaling (default 0.5)")
    g.add_argument("--momentum", type=float, help="sgd momentum in [0, 1] (default 0.9)")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction,
                   help="Nesterov momentum for sgd (default on)")
    g.add_argument("--beta-1", type=float, help="adam: decay of the first moment (default 0.9)")
    g.add_argument("--beta-2", type=float, help="adam: decay of the second moment (default 0.999)")
    g.add_argument("--epsilon", type=float, help="adam: numerical stability term (default 1e-8)")
    g.add_argument("--alpha", type=float, help="L2 penalty (default 1e-4)")
    g.add_argument("--batch-size", help="global batch: integer, auto (default: min(200, n)) or full")
    g.add_argument("--batch-per-rank", type=int,
                   help="global batch = this x the number of ranks (weak scaling); by design the result then "
                        "changes when the rank count changes (docs/performance.md, large batches)")
    g.add_argument("--warmup-epochs", type=float,
                   help="raise the learning rate linearly from ~0 over this many epochs, then follow "
                        "--lr-schedule (default 0: no warm-up); for large global batches")
    g.add_argument("--epochs", type=int, help="maximum epochs (default 200)")
    g.add_argument("--tol", type=float, help="improvement needed to count as progress (default 1e-4)")
    g.add_argument("--n-iter-no-change", type=int, help="epochs without progress before stopping (default 10)")
    g.add_argument("--loss-target", type=float, help="stop once the epoch loss is at or below this")
    g.add_argument("--dtype", help="float64 (default) or float32")
    g.add_argument("--seed", type=int, help="seed for init, shuffling and the test split (default 0)")
    g = p.add_argument_group("distribution")
    g.add_argument("--shard", help="block (default), strided or weighted:W0,W1,... (one weight per rank)")
    g.add_argument("--shuffle", help="global (default; N-independent), local (per shard) or none")
    g.add_argument("--sync", help="how ranks combine a step: allreduce (every rank updates all "
                   "parameters), sharded (each rank updates its 1/N slice: reduce-scatter + allgather) or "
                   "auto (default: sharded on 2+ ranks for models of 32k+ parameters); same results")
    g.add_argument("--stream", action="store_true",
                   help="leave X in the file and read it in chunks with read-ahead (bounded memory); "
                        "needs --shuffle none or local")
    g = p.add_argument_group("output")
    g.add_argument("--checkpoint", help="directory for checkpoints (written at the end and every N epochs)")
    g.add_argument("--checkpoint-every", type=int, help="also checkpoint every N epochs (default 0: only at the end)")
    g.add_argument("--keep-checkpoints", type=int, help="keep the newest K checkpoints (default 3)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --checkpoint DIR (any rank count); "
                        "starts fresh when DIR has none")
    g.add_argument("--metrics", help="write one record per epoch to this file: JSON lines, or CSV if it ends in .csv")
    g.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    g.add_argument("--log-every", type=int, help="print every N-th epoch line (default 1)")
    g.add_argument("--quiet", action="store_true", help="no start and per-epoch lines, only the result")


def build_parser():
    parser = _Parser(prog="mpinn", description="Data-parallel MLP training on MPI ranks, data in HDF5.")
    parser.add_argument("--version", action="version", version=f"mpinn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train an MLP (run under mpiexec -n N)", argument_default=argparse.SUPPRESS)
    _train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="metrics of a checkpoint on a labelled HDF5 file")
    p.add_argument("--model", required=True, help="checkpoint file or checkpoint directory")
    p.add_argument("--data", required=True)
    p.add_argument("--x-name", default="X")
    p.add_argument("--y-name", default="y")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
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
    p.add_argument("-o", "--out", help="output file (default: the checkpoint name with .npz/.onnx/.joblib)")
    p.set_defaults(func=cmd_export)

    data = sub.add_parser("data", help="make or convert datasets").add_subparsers(
        dest="data_command", required=True, parser_class=_Parser)
    p = data.add_parser("iris", help="write the built-in iris data (150 x 4, 3 classes)")
    p.add_argument("out")
    p.set_defaults(func=cmd_data_iris)
    p = data.add_parser("synthetic", help="write a synthetic classification or regression set")
    p.add_argument("out")
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--task", default="classify", choices=["classify", "regress"])
    p.add_argument("--outputs", type=int, default=1, help="regression outputs (default 1)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_synthetic)
    p = data.add_parser("digits", help="write scikit-learn's digits data (1797 x 64, 10 classes; needs sklearn)")
    p.add_argument("out")
    p.set_defaults(func=cmd_data_digits)
    p = data.add_parser("info", help="shapes, dtypes, chunks, class balance and NaN count of a data file")
    p.add_argument("file")
    p.add_argument("--x-name", default="X")
    p.add_argument("--y-name", default="y")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_data_info)
    p = data.add_parser("split", help="split a data file into train and test files (stratified, seeded)")
    p.add_argument("file")
    p.add_argument("train_out")
    p.add_argument("test_out")
    p.add_argument("--test-fraction", type=float, default=0.2, help="(default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stratify", action="store_true", help="plain random split even for class labels")
    p.set_defaults(func=cmd_data_split)
    p = data.add_parser("convert", help="CSV, NPY or NPZ to mpinn's HDF5 layout")
    p.add_argument("input")
    p.add_argument("out")
    p.add_argument("--label-column", help="label column name or index (default: last)")
    p.add_argument("--task", choices=["classify", "regress"])
    p.add_argument("--chunk-rows", type=int)
    p.set_defaults(func=cmd_data_convert)
    return parser


# ---- commands ------------------------------------------------------------------------


def config_from_args(args):
    """TrainConfig defaults <- --config TOML file <- flags given on the command line."""
    from .config import CLI_ONLY, TrainConfig, load_toml

    values = load_toml(args.config) if getattr(args, "config", None) else {}
    values.update({k: v for k, v in vars(args).items() if k in TrainConfig.field_names() or k in CLI_ONLY})
    options = {k: values.pop(k) for k in list(values) if k in CLI_ONLY}
    return TrainConfig.from_dict(values), options


def _check_output_file(path, what):
    if os.path.isdir(path):
        raise InputError(f"{what}: {path} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise InputError(f"{what}: cannot write {path} (directory missing or not writable)")


def _print_report(report, as_json):
    """One JSON object, or one `key: value` line per entry (lists and dicts as JSON)."""
    if as_json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")


def cmd_train(args):
    from .checkpoint import Checkpointer
    from .comm import world
    from .faults import FAULT_ENV, Preemption, parse_faults
    from .logs import ProgressBar
    from .problem import decide_on_root, load_problem
    from .train import Trainer

    cfg, options = config_from_args(args)
    log_every, quiet, as_json = options.get("log_every", 1), options.get("quiet", False), options.get("json", False)
    if not isinstance(log_every, int) or log_every < 1:
        raise InputError(f"--log-every: must be an integer >= 1, got {log_every!r}")
    if getattr(args, "print_config", False):
        say(cfg.to_toml(), end="")
        return 0
    Preemption.install()  # from here on a SIGTERM/SIGUSR1 means: checkpoint at the next step
    comm = world()
    checkpointer = Checkpointer(cfg.checkpoint, comm, keep=cfg.keep_checkpoints) if cfg.checkpoint else None

    def check_outputs():
        if checkpointer:
            checkpointer.check_writable()
        if cfg.metrics:
            _check_output_file(cfg.metrics, "--metrics")

    decide_on_root(comm, check_outputs)
    problem = load_problem(cfg, comm)
    bar = ProgressBar() if comm.rank == 0 and not quiet and ProgressBar.wanted() else None

    def log(line):
        if bar:
            bar.clear()
        print(line, flush=True)

    # A live bar on a terminal only, never in batch logs.
    progress = (lambda epoch, step, n: step % max(1, n // 50) == 0 and bar.update(epoch, step, n)) if bar else None
    trainer = Trainer(cfg, problem, comm, checkpointer=checkpointer, log_every=log_every,
                      log=(lambda line: None) if quiet else log, progress=progress,
                      faults=parse_faults(os.environ.get(FAULT_ENV), comm.rank))
    if cfg.resume:
        _resume(trainer, cfg, comm)
    if comm.rank == 0:
        if cfg.metrics:  # the resolved configuration next to the metrics it produced
            with open(os.path.splitext(cfg.metrics)[0] + ".config.toml", "w") as fh:
                fh.write(cfg.to_toml())
    if comm.rank == 0 and not quiet:
        print("# resolved configuration\n" + cfg.to_toml(), end="", flush=True)
        print(f"mpinn {__version__}: {comm.size} rank(s), {problem.task}, layers {trainer.model.layer_sizes}, "
              f"{len(problem.train_rows)} train rows, batch {trainer.batch_size}, solver {cfg.solver}, "
              f"shard {cfg.shard}, shuffle {cfg.shuffle}, sync {trainer.sync.name if trainer.sync else '-'}, "
              f"{cfg.dtype}", flush=True)
    trainer.fit()
    if trainer.stop_reason == "preempted":
        return EXIT_PREEMPTED
    if comm.rank == 0:
        summary = trainer.summary()
        test = {k: v for k, v in summary.items() if k.startswith("test_")}
        print(f"done: {summary['epochs']} epochs ({summary['stop_reason']}), final loss "
              f"{summary['final_loss']:.6f}" + "".join(f", {k} {v:.4f}" for k, v in test.items())
              + (f", checkpoint {summary['checkpoint']}" if summary["checkpoint"] else ""), flush=True)
        if as_json:
            print(json.dumps(summary), flush=True)
    return 0


def _resume(trainer, cfg, comm):
    """Load the latest checkpoint of cfg.checkpoint into ``trainer`` (rank 0 picks the file)."""
    from .checkpoint import read_checkpoint, resolve
    from .config import resume_conflicts
    from .problem import decide_on_root

    def pick():
        if not os.path.exists(os.path.join(cfg.checkpoint, "latest")):
            return None
        path = resolve(cfg.checkpoint)
        read_checkpoint(path)  # verified once here, so every rank reads a good file
        return path

    path = decide_on_root(comm, pick)
    if path is None:
        if comm.rank == 0:
            print(f"--resume: no checkpoint in {cfg.checkpoint} yet, starting fresh", flush=True)
        return
    attrs, arrays = read_checkpoint(path)
    conflicts = resume_conflicts(attrs["config"], cfg)
    if conflicts:
        now = cfg.to_dict()
        detail = ", ".join(f"--{k.replace('_', '-')} {attrs['config'][k]!r} (now {now[k]!r})" for k in conflicts)
        raise InputError(f"--resume: {path} was trained with {detail}")
    meta, model = attrs["model"], trainer.model
    if meta["layer_sizes"] != model.layer_sizes or meta["output"] != model.output:
        raise InputError(f"--resume: {path} has layers {meta['layer_sizes']}, this data and config give {model.layer_sizes}")
    classes = trainer.problem.classes
    if attrs["classes"] != (None if classes is None else classes.tolist()):
        raise InputError(f"--resume: {path} was trained on classes {attrs['classes']}, this data has "
                         f"{None if classes is None else classes.tolist()}")
    trainer.restore(attrs["state"], arrays)
    if comm.rank == 0:
        print(f"resumed from {path} at epoch {trainer.epoch} step {trainer.step_in_epoch} "
              f"on {comm.size} rank(s)", flush=True)


def _problem_for_model(fitted, path, x_name, y_name, comm, with_y=True):
    """This rank's shard of a file, checked against a fitted model."""
    import h5py
    import numpy as np

    from . import data as datamod
    from .partition import make_shard
    from .problem import Problem, decide_on_root

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

    from .comm import world
    from .problem import collective_check, decide_on_root, labels_as_classes
    from .train import evaluate

    comm = world()
    fitted = _load_on_all(comm, args.model)
    problem, _ = _problem_for_model(fitted, args.data, args.x_name, args.y_name, comm)
    if problem.task == "classify":
        unseen = np.setdiff1d(labels_as_classes(problem.y, problem.classes), problem.classes)
        collective_check(comm, f"{args.data}: labels {unseen[:5].tolist()} are not classes of the model"
                         if len(unseen) else None)
    if args.plot:  # checked on every rank, before any work
        if problem.task != "classify":
            raise InputError("eval --plot draws a confusion matrix: classifiers only")
        from .plot import _pyplot, plot_confusion

        _pyplot()
        decide_on_root(comm, lambda: _check_output_file(args.plot, "--plot"))
    report = evaluate(fitted._model, fitted._params, problem, problem.X, problem.y, comm)
    if comm.rank == 0 and args.plot:
        plot_confusion(report, args.plot)
    if comm.rank == 0:
        _print_report(report, args.json)
    return 0


def cmd_predict(args):
    import numpy as np

    from .comm import world
    from .problem import decide_on_root

    comm = world()
    fitted = _load_on_all(comm, args.model)
    decide_on_root(comm, lambda: _check_output_file(args.out, "--out"))
    problem, info = _problem_for_model(fitted, args.data, args.x_name, None, comm, with_y=False)
    scores = fitted.forward(problem.X)
    scores = comm.gather_rows(np.ascontiguousarray(scores, dtype=np.float64))
    if comm.rank == 0:
        from .datasets import write_predictions

        write_predictions(args.out, fitted, scores)
        print(f"wrote {scores.shape[0]} predictions to {args.out}")
    return 0


def _load_on_all(comm, path):
    """Every rank loads the checkpoint, after rank 0 has confirmed it is valid."""
    from .checkpoint import load_model
    from .problem import decide_on_root

    decide_on_root(comm, lambda: load_model(path) and None)
    return load_model(path)


def cmd_info(args):
    import h5py
    import numpy as np

    from .comm import library_info, world

    comm = world()
    if comm.rank == 0:
        info = {"mpinn": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
                "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, **library_info(),
                "ranks": comm.size, "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_data_iris(args):
    from .datasets import load_iris, write_hdf5

    if env_rank() == 0:
        X, y, features, classes = load_iris()
        write_hdf5(args.out, X, y, class_names=list(classes), feature_names=list(features))
        print(f"wrote {args.out}: iris, {X.shape[0]} rows x {X.shape[1]} features, {len(classes)} classes")
    return 0


def cmd_data_synthetic(args):
    from .datasets import make_synthetic, write_hdf5

    if env_rank() == 0:
        X, y = make_synthetic(args.samples, args.features, args.classes, task=args.task,
                              n_outputs=args.outputs, seed=args.seed)
        write_hdf5(args.out, X.astype(args.dtype), y)
        print(f"wrote {args.out}: {X.shape[0]} rows x {X.shape[1]} features, {args.task}")
    return 0


def cmd_plot(args):
    from .plot import plot_metrics

    if env_rank() == 0:
        plot_metrics(args.metrics, args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_export(args):
    from .export import export

    if env_rank() == 0:
        import mpinn

        model = mpinn.load(args.model)
        out = args.out or os.path.splitext(_checkpoint_file(args.model))[0] + {
            "npz": ".npz", "onnx": ".onnx", "sklearn": ".joblib"}[args.format]
        export(model, out, args.format)
        print(f"wrote {out}")
    return 0


def _checkpoint_file(path):
    from .checkpoint import resolve

    return resolve(path)


def cmd_data_digits(args):
    from .datasets import load_digits, write_hdf5

    if env_rank() == 0:
        X, y, names = load_digits()
        write_hdf5(args.out, X, y, class_names=names)
        print(f"wrote {args.out}: digits, {X.shape[0]} rows x {X.shape[1]} features, 10 classes")
    return 0


def cmd_data_info(args):
    from .datasets import info

    if env_rank() == 0:
        _print_report(info(args.file, x_name=args.x_name, y_name=args.y_name), args.json)
    return 0


def cmd_data_split(args):
    from .datasets import split

    if env_rank() == 0:
        counts = split(args.file, args.train_out, args.test_out, test_fraction=args.test_fraction,
                       seed=args.seed, stratify=not args.no_stratify)
        print(f"wrote {args.train_out} ({counts['train_rows']} rows) and {args.test_out} ({counts['test_rows']} rows)")
    return 0


def cmd_data_convert(args):
    from .datasets import convert

    if env_rank() == 0:
        label = args.label_column
        if label is not None and label.lstrip("-").isdigit():
            label = int(label)
        summary = convert(args.input, args.out, label_column=label, chunk_rows=args.chunk_rows, task=args.task)
        print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0


def main(argv=None):
    limit_blas_threads()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        say(f"mpinn: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - any other failure must end the whole job
        from .train import TrainingDiverged

        if isinstance(exc, TrainingDiverged):
            say(f"mpinn: error: {exc}", file=sys.stderr)
            return EXIT_DIVERGED
        print(f"mpinn: rank {env_rank()}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if "mpi4py.MPI" in sys.modules:
            from .comm import world

            world().abort(1)
        return 1
