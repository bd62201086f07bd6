"""`mpinn search`: a grid (or randomized) search over `mpinn train` options, tasks on rank groups,
elastic under ULFM; GRID.toml is read by cli/search_grid.py, the search object built by
cli/search_make.py. Registered by app.build_parser.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
import warnings

from mpinn.atomic import check_output_file
from mpinn.cli.common import EXIT_INTERRUPTED, EXIT_PREEMPTED, say
from mpinn.cli.search_grid import option_names, parse_grid, train_value
from mpinn.cli.search_make import check_halving_options, make_search, parse_scoring
from mpinn.errors import InputError


def add_search_command(sub):
    p = sub.add_parser("search", help="grid or randomized search of train options, tasks on groups of ranks")
    p.add_argument("--data", required=True,
                   help="training data, HDF5 with datasets X and y (each fit reads only its rank's rows)")
    p.add_argument("--grid", required=True, help="TOML file: `mpinn train` option names, lists of values to try")
    p.add_argument("--n-iter", type=int, help="randomized search: sample this many candidates from the grid")
    p.add_argument("--seed", type=int, help="seed of the sampling (--n-iter; default 0) and of a shuffled "
                   "assignment of rows to folds (default: consecutive rows per fold)")
    p.add_argument("--cv", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--stratified", action="store_true", help="stratified folds (classification)")
    p.add_argument("--scoring", help="scikit-learn scorer name(s), comma-separated; the first picks the best "
                   "(default: accuracy for classification, r2 for regression)")
    p.add_argument("--group-size", type=int, default=1,
                   help="ranks per fit; must divide the number of ranks (default 1)")
    p.add_argument("--allocation", choices=["dynamic", "round-robin"], default="dynamic",
                   help="dynamic (default): free groups take the next task, longest first; round-robin: "
                        "task i on group i mod G")
    p.add_argument("--results", required=True, help="results file, one row per candidate: .csv or .jsonl")
    p.add_argument("--checkpoint", help="directory recording each finished task (for --resume)")
    p.add_argument("--resume", action="store_true", help="continue the search recorded in --checkpoint DIR "
                   "(any rank count or group size): only unfinished tasks run")
    p.add_argument("--no-refit", action="store_true", help="do not train the best candidate on all rows")
    p.add_argument("--elastic", action="store_true",
                   help="require elastic mode: when a rank dies, the survivors continue the search from its "
                        "--checkpoint (Open MPI 5 under `mpirun --with-ft ulfm`; on by itself there)")
    p.add_argument("--halving", action="store_true", help="successive halving (scikit-learn's HalvingGridSearchCV, "
                   "with --n-iter HalvingRandomSearchCV): every candidate on a small resource, the best 1/F on F "
                   "times more, and so on")
    p.add_argument("--factor", type=_number, default=3, help="--halving: F, the fraction 1/F of the candidates "
                   "kept and the growth of the resource per iteration (default 3)")
    p.add_argument("--resource", choices=["samples", "epochs"], default="samples",
                   help="--halving: what grows, training rows (default) or epochs (up to the grid's epochs)")
    p.add_argument("--min-resources", help="--halving: rows or epochs of the first iteration: a number, exhaust "
                   "(the last iteration uses all; the grid search's default) or smallest (the random search's)")
    p.add_argument("--aggressive-elimination", action="store_true",
                   help="--halving: repeat the first resource until few enough candidates are left")
    p.add_argument("--warm-start-promoted", action="store_true", help="--halving --resource epochs: a promoted "
                   "candidate continues its fits from the epochs already trained (the same scores)")
    p.set_defaults(func=cmd_search)


def _number(text):
    """--factor: an int or a float, as scikit-learn takes it."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return int(value) if value.is_integer() else value


def _load_data(path, x_name, y_name, comm):
    """X as a RowView of the file (data/rows.py): a fit reads only its rank's share of the fold's
    rows, scoring only its block of the test rows, so no rank holds all of X. Every rank holds y
    (the folds are drawn from it)."""
    import h5py
    import numpy as np

    from mpinn.data import hdf5 as datamod
    from mpinn.data.rows import RowView
    from mpinn.parallel.agree import on_root

    info = datamod.DataInfo(**on_root(comm, lambda: datamod.inspect(path, x_name, y_name).to_json()))
    with h5py.File(path, "r") as f:
        y = np.array(f[y_name].asstr()[()], dtype=str) if info.y_kind == "str" else f[y_name][()]
    return RowView(path, x_name, dtype=np.float64, shape=(info.n_rows, info.n_features)), y


def _check_rows(comm, X, y, path, task):
    """Each rank reads and checks only its block of the rows (one verdict for all)."""
    from mpinn.data.partition import make_shard
    from mpinn.train.problem import check_values

    shard = make_shard(len(X), comm.rank, comm.size, "block")
    check_values(comm, X.read(shard.rows), y[shard.as_slice()], path, task, shard)


def cmd_search(args):
    import numpy as np

    from mpinn.parallel.comm import replace_world, world
    from mpinn.parallel.agree import on_root

    comm = world()
    elastic, why_not = _elastic_mode(comm, args)
    if elastic:  # revoke and shrink a copy: MPI_Finalize hangs after COMM_WORLD itself was revoked
        comm = comm.dup()
        replace_world(comm)
    randomized = args.n_iter is not None
    for name, value, low in (("--cv", args.cv, 2), ("--group-size", args.group_size, 1), ("--n-iter", args.n_iter, 1)):
        if value is not None and value < low:
            raise InputError(f"{name}: must be >= {low}, got {value}")
    if comm.size % args.group_size:
        raise InputError(f"--group-size {args.group_size} does not divide the {comm.size} ranks")
    if args.resume and not args.checkpoint:
        raise InputError("--resume needs --checkpoint DIR (the directory of the search to continue)")
    check_halving_options(args)
    if not args.results.lower().endswith((".csv", ".jsonl")):
        raise InputError(f"--results: name a .csv or .jsonl file, got {args.results}")
    fixed, varied = on_root(comm, lambda: parse_grid(args.grid, randomized))
    scoring = parse_scoring(args.scoring)
    best_dir = os.path.splitext(args.results)[0] + "-best"

    def check_outputs():
        check_output_file(args.results, "--results")
        if args.checkpoint and not args.resume:
            from mpinn.search.tasklog import TaskLog

            if TaskLog(args.checkpoint, None).exists() or TaskLog(os.path.join(args.checkpoint, "iter-0"), None).exists():
                raise InputError(f"--checkpoint: {args.checkpoint} already holds a search; add --resume to continue "
                                 "it, or choose another directory")
        if not args.no_refit:
            from mpinn.train.checkpoint import Checkpointer

            refit = Checkpointer(best_dir, None)
            if not args.resume and refit.holds_checkpoints():  # an earlier search's refit: never mixed
                raise InputError(f"--results: the refit folder {best_dir} already holds checkpoints of an earlier run; "
                                 "remove it or choose another --results (or continue that search with --resume)")
            refit.check_writable()

    on_root(comm, check_outputs)
    data = {"x_name": fixed.pop("x_name", "X"), "y_name": fixed.pop("y_name", "y"), "task": fixed.pop("task", "auto")}
    X, y = _load_data(args.data, data["x_name"], data["y_name"], comm)
    task = data["task"]
    if task == "auto":
        from sklearn.utils.multiclass import type_of_target

        task = "classify" if type_of_target(y) in ("binary", "multiclass") else "regress"
    _check_rows(comm, X, y, args.data, task)
    if args.stratified and task != "classify":
        raise InputError("--stratified: folds are stratified by class; this is a regression")
    if len(X) < args.cv:
        raise InputError(f"--cv {args.cv}: more folds than the {len(X)} rows of {args.data}")
    search = make_search(args, task, fixed, varied, scoring, len(X))
    bar = _Progress() if comm.rank == 0 and sys.stdout.isatty() else None
    search._progress = bar.update if bar else None
    from sklearn.exceptions import ConvergenceWarning, FitFailedWarning

    from mpinn.parallel.faults import FAULT_ENV, Interrupted, Preempted, Preemption

    # MPINN_FAULT (tests) counts this rank's tasks in the search, and steps only in the refit
    # (`mpinn train`): the tasks' fits must not read it again, each by its rank in its group.
    fault_spec = os.environ.pop(FAULT_ENV, None)
    search._task_hook = _fault_hook(comm.rank, fault_spec)

    start = time.time()
    try:
        with warnings.catch_warnings():  # short runs are normal in a search; failures are in the table
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FitFailedWarning)
            if elastic:
                comm = _fit_search(search, X, y, comm, args)
            else:
                search.fit(X, y)
    except (Preempted, Interrupted) as exc:  # the search's words, not those of the fit it stopped
        kept = (f"the finished tasks are recorded in {args.checkpoint}; run it again with --resume for the rest"
                if args.checkpoint else "no --checkpoint: the finished tasks are not kept")
        # The rank that noticed the signal named it in the message every rank raised.
        named = re.search(r"\bSIG[A-Z0-9]+", str(exc))
        signal = named.group(0) if named else Preemption.signal_name or "a signal"
        say(f"mpinn: search stopped by {signal}; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(exc, Interrupted) else EXIT_PREEMPTED
    seconds = time.time() - start
    if bar:
        bar.clear()
    results = search.cv_results_
    metric = next(k[len("mean_test_"):] for k in results if k.startswith("mean_test_"))
    # sklearn's rule for best_index_ (halving: the best of the last iteration)
    best = search.best_index_ if args.halving else int(np.argmin(results[f"rank_test_{metric}"]))
    if comm.rank == 0:
        _report(args, search, comm, metric, seconds, "yes" if elastic else f"no ({why_not})")
    if not args.no_refit:
        chosen = {field: train_value(field, values, results["params"][best][option_names()[field]])
                  for field, values in varied.items()}
        if args.halving and args.resource == "epochs":  # the best candidate's last iteration's epochs
            chosen["epochs"] = int(results["n_resources"][best])
        if fault_spec is not None:
            os.environ[FAULT_ENV] = fault_spec
        code = _refit(args, {**data, **fixed, **chosen}, best_dir)
        if code:  # preempted (75) or interrupted (130): resumable, and the scheduler must know
            return code
        say(f"best: candidate {best} ({_describe(chosen)}), mean_test_{metric} "
            f"{results[f'mean_test_{metric}'][best]:.6g}; trained on all rows as `mpinn train` would: "
            f"checkpoint {best_dir}")
    return 0


def _elastic_mode(comm, args):
    """(on, why not): a search survives a rank's death where MPI can (ULFM) and the finished
    tasks are in a task log to continue from; --elastic where it cannot is exit 2."""
    on, why = comm.elastic_support()
    if on and not args.checkpoint:
        on, why = False, "no --checkpoint to continue from"
    if args.elastic and not on:
        hint = "" if why.startswith("no --") else "; it needs Open MPI 5 started with `mpirun --with-ft ulfm`"
        raise InputError(f"--elastic: this search cannot survive a rank's death ({why}){hint} (docs/reliability.md, "
                         "\"Elastic training\")")
    return on, why


def _fit_search(search, X, y, comm, args):
    """search.fit; when a rank dies, again on the survivors, which run only the tasks the task
    log does not hold (the dead rank's current task among them), as often as it happens.
    Returns the survivors' communicator."""
    from mpinn.cli.elastic import continue_on_survivors, lost_words

    launched, first_resumed = list(range(comm.size)), None
    while True:
        try:
            search.fit(X, y)
            if comm.agree_all(True):  # uniform: every survivor leaves here, or every one continues
                break
            agreed = True
        except BaseException as exc:
            if not comm.is_process_failure(exc):
                raise
            agreed = False
        first_resumed = search.tasks_resumed_ if first_resumed is None else first_resumed
        started = time.perf_counter()
        comm, lost, launched = continue_on_survivors(comm, launched, agreed)
        # Groups are rebuilt on the survivors: the largest size up to --group-size that divides them.
        search.set_params(group_size=max(g for g in range(1, args.group_size + 1) if comm.size % g == 0))
        say(f"mpinn: {lost_words(lost)} lost during the search; continuing on {comm.size} rank(s) in groups "
            f"of {search.group_size} from the tasks recorded in {args.checkpoint} "
            f"(recovery {time.perf_counter() - started:.2f} s)", file=sys.stderr)
    if first_resumed is not None:  # the tasks recorded before the loss were run by this command too
        search.tasks_run_ += search.tasks_resumed_ - first_resumed
        search.tasks_resumed_ = first_resumed
    return comm


def _refit(args, values, best_dir):
    """The best candidate trained on all rows by `mpinn train` itself (its scaling, its checkpoint)."""
    import argparse

    from mpinn.cli.train import cmd_train

    # A resumed search continues a refit that was preempted (its checkpoint is in best_dir).
    return cmd_train(argparse.Namespace(data=args.data, checkpoint=best_dir, quiet=True, resume=args.resume, **values))


def _describe(values):
    return ", ".join(f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in values.items())


def _fault_hook(rank, spec):
    """MPINN_FAULT="RANK:TASK:KIND" (tests): rank RANK does KIND (kill, raise, exit) as it starts
    its TASK-th task (1-based, counted on that rank)."""
    from mpinn.parallel.faults import inject, parse_faults

    faults = parse_faults(spec, rank)
    if not faults:
        return None
    started = [0]

    def hook():
        started[0] += 1
        if started[0] in faults:
            inject(faults[started[0]], rank, started[0], None)
    return hook


def _report(args, search, comm, metric, seconds, elastic):
    from mpinn.search import results as search_results

    display = {param: field.replace("_", "-") for field, param in option_names().items()}
    table = search_results.rows(search.cv_results_, display, plain=_plain)
    search_results.write_rows(args.results, table)
    n_cand = len(search.cv_results_["params"])
    print(f"mpinn search: {n_cand} candidates x {search.n_splits_} folds = {n_cand * search.n_splits_} tasks on "
          f"{comm.size} rank(s) in groups of {search.group_size}, allocation {args.allocation}, elastic: {elastic}")
    if args.halving:
        print(f"halving: {search.n_iterations_} iterations, candidates {search.n_candidates_}, "
              f"{args.resource} {search.n_resources_}, factor {args.factor}")
    print(f"tasks run: {search.tasks_run_} (done before: {search.tasks_resumed_}) in {seconds:.1f}s")
    for line in search_results.table_lines(table, metric):
        print(line)
    failed = sum(row["error"] is not None for row in table)
    if failed:
        print(f"{failed} candidate(s) had a failed fit: score {search.error_score}, message in the error column")
    print(f"wrote {args.results} ({n_cand} candidates)", flush=True)


def _plain(value):
    """A candidate's value as `mpinn train` spells it (the scaler step by its --scale name)."""
    if value == "passthrough":
        return "none"
    if hasattr(value, "get_params"):
        return {"StandardScaler": "standard", "MinMaxScaler": "minmax"}.get(type(value).__name__, repr(value))
    return value


class _Progress:
    """`search 7/18 tasks, ETA 12s` redrawn in place (rank 0, on a terminal only)."""

    def __init__(self):
        self.start, self.lock, self.shown = time.time(), threading.Lock(), False

    def update(self, done, total):
        with self.lock:
            elapsed = time.time() - self.start
            eta = f"{elapsed / done * (total - done):.0f}s" if done else "?"
            sys.stdout.write(f"\r  search {done}/{total} tasks, ETA {eta}   ")
            sys.stdout.flush()
            self.shown = True

    def clear(self):
        if self.shown:
            sys.stdout.write("\r" + " " * 40 + "\r")
            sys.stdout.flush()
