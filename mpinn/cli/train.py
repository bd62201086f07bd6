"""`mpinn train`: its options, the configuration they resolve to, the run and --resume.

Registered on the `mpinn` parser by app.build_parser; exit codes and the shared helpers are
cli.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mpinn import __version__
from mpinn.atomic import check_output_file
from mpinn.cli.common import say
from mpinn.cli.elastic import Run, elastic_mode, fit, fit_elastic
from mpinn.errors import InputError


def add_train_command(sub):
    """`mpinn train` on app.build_parser's subparsers."""
    p = sub.add_parser("train", help="train an MLP (run under mpiexec -n N)", argument_default=argparse.SUPPRESS)
    _train_args(p)
    p.set_defaults(func=cmd_train)


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
                   help="auto (default): integer, string or integral-valued float 1-D labels classify "
                        "(scikit-learn's type_of_target), real values regress")
    g.add_argument("--scale", help="feature scaling, its statistics from the training rows of all ranks and "
                   "kept in the checkpoint: standard (default: zero mean, unit variance), minmax ([0, 1]) or none")
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
    g.add_argument("--early-stopping", action="store_true",
                   help="hold out --validation-fraction of the training rows (scikit-learn's split) and stop when "
                        "their score (accuracy or R2) stops improving; ends on the best weights")
    g.add_argument("--validation-fraction", type=float, help="rows held out by --early-stopping (default 0.1)")
    g.add_argument("--loss-target", type=float, help="stop once the epoch loss is at or below this")
    g.add_argument("--dtype", help="float64 (default) or float32")
    g.add_argument("--seed", type=int, help="seed for init, shuffling and the test split (default 0)")
    g = p.add_argument_group("distribution")
    g.add_argument("--shard", help="block (default), strided, random[:CHUNK_ROWS] (seeded chunks of rows dealt to "
                   "the ranks) or weighted:W0,W1,... (one weight per rank)")
    g.add_argument("--balance", help="static (default: the --shard shares) or dynamic (rank 0 resizes the shares "
                   "from the measured compute speeds every few steps; same results)")
    g.add_argument("--shuffle", help="global (default; N-independent), local (per shard) or none")
    g.add_argument("--permutation", help="how the test split and the global shuffle are drawn: sklearn "
                   "(scikit-learn's, O(n) per rank), keyed (O(n/N) per rank) or auto (default: sklearn up to "
                   "10,000,000 rows)")
    g.add_argument("--sync", help="how ranks combine a step: allreduce (every rank updates all "
                   "parameters), sharded (each rank updates its 1/N slice: reduce-scatter + allgather), shm (the "
                   "ranks of a node share one parameter copy and read each other's gradients in shared "
                   "memory; Allreduce of slices across nodes) or "
                   "auto (default: shm on 2+ ranks for models of 32k+ parameters, sharded where shm cannot run), "
                   "all the same model; "
                   "or local:K (model averaging: each rank steps alone on its rows of each batch, one "
                   "Allreduce of the models every K steps; the result depends on the rank count)")
    g.add_argument("--sync-warmup-steps", type=int,
                   help="with --sync local:K: the first W steps of the run are allreduce steps (post-local SGD; "
                        "default 0)")
    g.add_argument("--elastic", action="store_true",
                   help="require elastic training: when a rank dies the others continue without it (ends with an "
                        "uninterrupted run's model); on by itself where the MPI can (Open MPI 5 under "
                        "`mpirun --with-ft ulfm`), exit 2 where it cannot")
    g.add_argument("--min-ranks", type=int,
                   help="elastic training: with fewer ranks left than this, checkpoint and exit 75 (default 1)")
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
    g.add_argument("--mlflow", nargs="?", const=True, metavar="RUN_NAME",
                   help="log one MLflow run for the job from rank 0 (to MLFLOW_TRACKING_URI): the configuration as "
                        "params, every epoch's metrics, the final checkpoint; needs the mlflow extra")
    g.add_argument("--log-every", type=int, help="print every N-th epoch line (default 1)")
    g.add_argument("--quiet", action="store_true", help="no start and per-epoch lines, only the result")
    g.add_argument("--verbose", action="store_true",
                   help="also print the resolved configuration as TOML before training (it is always in --metrics)")
    g.add_argument("--progress", choices=["auto", "on", "off"],
                   help="progress bar within each epoch: auto (default: only on a terminal a person watches; "
                        "never under Open MPI, which gives ranks a pseudo-terminal even when writing to a file), on, off")


def config_from_args(args):
    """TrainConfig defaults <- --config TOML file <- flags given on the command line."""
    from mpinn.train.config import CLI_ONLY, TrainConfig, load_toml

    values = load_toml(args.config) if getattr(args, "config", None) else {}
    values.update({k: v for k, v in vars(args).items() if k in TrainConfig.field_names() or k in CLI_ONLY})
    options = {k: values.pop(k) for k in list(values) if k in CLI_ONLY}
    return TrainConfig.from_dict(values), options


def cmd_train(args):
    from mpinn.train.checkpoint import Checkpointer
    from mpinn.parallel.comm import replace_world, world
    from mpinn.parallel.balance import SLOW_ENV, parse_slow
    from mpinn.parallel.faults import FAULT_ENV, SIGNALS, Preemption, parse_faults
    from mpinn.train.elastic import Snapshots
    from mpinn.train.logs import PROGRESS, EpochLines, ProgressBar
    from mpinn.parallel.agree import on_root
    from mpinn.train.problem import load_problem
    from mpinn.train.loop import Trainer
    from mpinn.train.tracking import MlflowTracker, check_available

    # From here on SIGTERM/SIGUSR1/SIGINT only set a flag: every rank stops at the same step,
    # checkpoints and exits 75 (130 for SIGINT alone), one line from rank 0, no traceback.
    Preemption.reset()
    Preemption.install(SIGNALS)
    cfg, options = config_from_args(args)
    log_every, quiet, as_json = options.get("log_every", 1), options.get("quiet", False), options.get("json", False)
    verbose = options.get("verbose", False)
    if not isinstance(log_every, int) or log_every < 1:
        raise InputError(f"--log-every: must be an integer >= 1, got {log_every!r}")
    min_ranks = options.get("min_ranks", 1)
    if not isinstance(min_ranks, int) or min_ranks < 1:
        raise InputError(f"--min-ranks: must be an integer >= 1, got {min_ranks!r}")
    progress_mode = options.get("progress", "auto")
    if progress_mode not in PROGRESS:
        raise InputError(f"--progress: choose from {', '.join(PROGRESS)}, got {progress_mode!r}")
    if getattr(args, "print_config", False):
        say(cfg.to_toml(), end="")
        return 0
    comm = world()
    elastic, why_not = elastic_mode(comm, cfg, options.get("elastic", False))
    if elastic:  # revoke and shrink a copy: MPI_Finalize hangs after COMM_WORLD itself was revoked
        comm = comm.dup()
        replace_world(comm)
    mlflow = options.get("mlflow", False)
    if mlflow:
        check_available(comm)  # before the data loads: one line naming the extra, exit 2
    # Both by rank in the job as launched (a fault or a slow-down stays with its process).
    slow = parse_slow(os.environ.get(SLOW_ENV), comm.size)  # the same value, hence verdict, on every rank
    faults = parse_faults(os.environ.get(FAULT_ENV), comm.rank)
    run = Run(cfg, launched=list(range(comm.size)))

    def check_outputs():
        if cfg.checkpoint:
            Checkpointer(cfg.checkpoint, comm).check_writable(fresh=not cfg.resume)
        if cfg.metrics:
            check_output_file(cfg.metrics, "--metrics")

    on_root(comm, check_outputs)
    # Before the Trainer: the statistics cover every training row (--early-stopping's
    # validation rows too, as scikit-learn's Pipeline(scaler, MLP) does).
    resumed = _read_resume_checkpoint(cfg, comm) if cfg.resume else None
    bar = ProgressBar() if comm.rank == 0 and not quiet and ProgressBar.wanted(progress_mode) else None

    def log(line):
        if bar:
            bar.clear()
        print(line, flush=True)

    def warn(message):  # rank 0's alone (the tracker's failures)
        if bar:
            bar.clear()
        print(f"mpinn: warning: {message}", file=sys.stderr, flush=True)

    # A live bar where a person watches (ProgressBar.wanted), never in batch logs.
    progress = (lambda epoch, step, n: step % max(1, n // 50) == 0 and bar.update(epoch, step, n)) if bar else None
    tracker = MlflowTracker(comm, None if mlflow is True else mlflow, on_failure=warn) if mlflow else None
    snapshots = Snapshots() if elastic else None

    def build(comm, restart=None):
        """The Trainer on ``comm``: fresh (scaled as --scale says or as the resumed checkpoint
        was), or continuing an elastic snapshot (``restart``: its state and scaler)."""
        problem = load_problem(cfg, comm)
        if restart is None:
            problem, run.scale = _scale(problem, cfg, comm, resumed)
        else:
            problem = scale_problem(problem, "none", comm, restart[3])
        trainer = Trainer(cfg, problem, comm,
                          checkpointer=Checkpointer(cfg.checkpoint, comm, keep=cfg.keep_checkpoints)
                          if cfg.checkpoint else None,
                          log_every=log_every, log=(lambda line: None) if quiet else log, progress=progress,
                          format_line=EpochLines(cfg.epochs), hold_out=cfg.early_stopping, faults=faults,
                          slow={i: slow[r] for i, r in enumerate(run.launched) if r in slow},
                          metrics_first={"config": cfg.to_dict(), "ranks": comm.size, "mpinn": __version__},
                          tracker=tracker if run.tracking else None, snapshots=snapshots)
        if restart is not None:
            trainer.restore(restart[1], restart[2])
        return trainer

    from mpinn.preprocessing.training import scale_problem

    trainer = build(comm)
    if cfg.resume:
        _resume(trainer, cfg, comm, resumed)
    if tracker:  # collective; the last check before anything is written: a run that cannot start is exit 2
        tracker.start(cfg.to_dict(), tags={"mpinn.version": __version__})
    if comm.rank == 0:
        if cfg.metrics:  # the resolved configuration next to the metrics it produced
            with open(os.path.splitext(cfg.metrics)[0] + ".config.toml", "w") as fh:
                fh.write(cfg.to_toml())
    if comm.rank == 0 and verbose:
        print("# resolved configuration\n" + cfg.to_toml(), end="", flush=True)
    if comm.rank == 0 and not quiet:
        task = trainer.problem.task + (f" ({trainer.problem.task_reason})" if trainer.problem.task_reason else "")
        print(f"mpinn {__version__}: {comm.size} rank(s), {task}, layers {trainer.model.layer_sizes}, "
              f"{len(trainer.problem.train_rows)} train rows, batch {trainer.batch_size}, solver {cfg.solver}, "
              f"shard {cfg.shard}{', balance dynamic' if cfg.balance == 'dynamic' else ''}, "
              f"shuffle {cfg.shuffle}, sync {trainer.sync.name if trainer.sync else '-'}"
              + (f" ({trainer.sync.describe()})" if trainer.sync and trainer.sync.describe() else "")
              + (f" (model averaging: the result depends on the rank count, {comm.size})"
                 if trainer.sync and trainer.sync.local else "") + f", scale {run.scale}, {cfg.dtype}"
              + (", elastic: yes" if elastic else f", elastic: no ({why_not})"), flush=True)
        if not cfg.checkpoint:  # said before training, while there is time to add it
            print("mpinn: note: no --checkpoint: the trained model will not be saved "
                  "(add --checkpoint DIR to keep it)", file=sys.stderr, flush=True)
    if comm.rank == 0 and trainer.problem.task_warning:  # even with --quiet: the run may be the wrong kind
        print(f"mpinn: warning: {trainer.problem.task_warning}", file=sys.stderr, flush=True)
    try:
        comm, trainer = fit_elastic(run, comm, trainer, snapshots, build, min_ranks) if elastic \
            else (comm, fit(trainer))
    except BaseException:
        if tracker and run.tracking:
            tracker.end("FAILED")
        raise
    if tracker and run.tracking:  # rank 0 only does anything here
        if trainer.checkpointer and trainer.checkpointer.last_path:  # the final one (a preempted run's)
            tracker.log_checkpoint(trainer.checkpointer.last_path)
        tracker.end("KILLED" if trainer.stop_reason in ("preempted", "below_min_ranks") else "FINISHED")
    if trainer.stop_reason in ("preempted", "below_min_ranks"):
        if comm.rank == 0:
            if bar:
                bar.clear()
            if trainer.stop_saved:
                saved = f"; checkpoint written to {cfg.checkpoint}, rerun with --resume"
            elif cfg.checkpoint:
                saved = f"; nothing trained, {cfg.checkpoint} is as it was"
            else:
                saved = "; no --checkpoint, nothing saved"
            print(f"mpinn: {trainer.stop_message}{saved}", file=sys.stderr, flush=True)
        return trainer.stop_exit_code
    if comm.rank == 0:
        summary = trainer.summary()
        test = {k: v for k, v in summary.items() if k.startswith("test_")}
        print(f"done: {summary['epochs']} epochs ({summary['stop_reason']}), final loss "
              f"{summary['final_loss']:.6f}" + "".join(f", {k} {v:.4f}" for k, v in test.items())
              + (f", checkpoint {summary['checkpoint']}" if summary["checkpoint"] else ""), flush=True)
        if as_json:
            print(json.dumps(summary), flush=True)
    return 0


def _read_resume_checkpoint(cfg, comm):
    """(attrs, arrays) of the latest checkpoint in cfg.checkpoint, or None when there is none yet.

    Rank 0 reads and verifies the file once and broadcasts it: other ranks may not see the
    directory at all (node-local storage), and 1,000 ranks re-reading it would load the file system."""
    from mpinn.train.checkpoint import read_checkpoint, resolve
    from mpinn.parallel.agree import on_root

    read = {}

    def pick():
        if not os.path.exists(os.path.join(cfg.checkpoint, "latest")):
            return None
        attrs, read["arrays"] = read_checkpoint(resolve(cfg.checkpoint))
        return attrs

    attrs = on_root(comm, pick)
    return None if attrs is None else (attrs, comm.bcast_arrays(read.get("arrays")))


def _resume(trainer, cfg, comm, resumed):
    """Continue ``trainer`` from ``resumed`` (_read_resume_checkpoint's), after checking it fits."""
    from mpinn.train.config import resume_conflicts

    if resumed is None:
        if comm.rank == 0:
            print(f"--resume: no checkpoint in {cfg.checkpoint} yet, starting fresh", flush=True)
        return
    attrs, arrays = resumed
    path = attrs["path"]
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


def _scale(problem, cfg, comm, resumed):
    """Scale the features as --scale says (statistics of the training rows, collective), or as
    the ``resumed`` checkpoint did (its statistics; none for one written before --scale):
    (the scaled Problem, the --scale it ran with)."""
    from mpinn.preprocessing.training import scale_problem, scaler_from_arrays

    if resumed is None:
        return scale_problem(problem, cfg.scale, comm), cfg.scale
    attrs, arrays = resumed
    n_inputs = attrs["model"]["layer_sizes"][0]
    if n_inputs != problem.n_features:  # before its statistics are applied to these rows
        raise InputError(f"--resume: {attrs['path']} has layers {attrs['model']['layer_sizes']}, trained on "
                         f"{n_inputs} features; this data has {problem.n_features}")
    fitted = scaler_from_arrays(arrays)
    problem = scale_problem(problem, "none", comm, fitted)
    if fitted is None:
        cfg.scale = "none"  # what the resumed model was trained with
    return problem, cfg.scale
