"""`mpinn eval`: metrics of a checkpoint on a labelled HDF5 file (the recorded test rows by default)."""

from __future__ import annotations

from mpinn.atomic import check_output_file
from mpinn.cli.common import load_on_all, print_report, problem_for_model
from mpinn.errors import InputError


def add_eval_command(sub):
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


def cmd_eval(args):
    import numpy as np

    from mpinn.train.checkpoint import recorded_split
    from mpinn.parallel.comm import world
    from mpinn.train.evaluation import chosen_rows, evaluate_rows, rows_to_score
    from mpinn.parallel.agree import collective_check, on_root
    from mpinn.train.problem import labels_as_classes

    comm = world()
    fitted, attrs = load_on_all(comm, args.model)
    split = recorded_split(attrs)
    problem, info = problem_for_model(fitted, args.data, args.x_name, args.y_name, comm)
    rows, count, note = rows_to_score(args.rows, split, info.n_rows, args.data)
    local = None if count is None else chosen_rows(rows, split, problem.shard)  # this rank's share
    if problem.task == "classify":
        y = problem.y if local is None else problem.y[local]
        unseen = np.setdiff1d(labels_as_classes(y, problem.classes), problem.classes)
        collective_check(comm, f"{args.data}: labels {unseen[:5].tolist()} are not classes of the model"
                         if len(unseen) else None)
        del y
    if args.plot:  # checked on every rank, before any work
        if problem.task != "classify":
            raise InputError("eval --plot draws a confusion matrix: classifiers only")
        from mpinn.cli.plot import require_pyplot, plot_confusion

        require_pyplot()
        on_root(comm, lambda: check_output_file(args.plot, "--plot"))
    report = evaluate_rows(fitted, problem, local, comm)
    if comm.rank == 0 and args.plot:
        plot_confusion(report, args.plot)
    if comm.rank == 0:
        scored = {"rows": rows, "n_rows": info.n_rows if count is None else count} if args.json \
            else {"rows": f"{rows} ({note})"}
        print_report({**scored, **report}, args.json)
    return 0
