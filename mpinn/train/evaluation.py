"""Test-set metrics over rows spread across ranks; the same numbers whatever the rank count."""

from __future__ import annotations

import numpy as np

from mpinn.nn import metrics as metricsmod
from mpinn.nn.fitted import class_index
from mpinn.train.problem import labels_as_classes


def evaluate(model, params, problem, X, y, comm):
    """Metrics over the rows every rank holds (collective; the report is valid on rank 0).

    Classification reduces a confusion matrix (integer counts), regression reduces sums in two
    passes (mean first, so R2 does not cancel catastrophically).
    """
    scores = model.forward(params, X) if len(X) else np.zeros((0, model.layer_sizes[-1]), model.dtype)
    if problem.task == "classify":
        k = len(problem.classes)
        truth = np.searchsorted(problem.classes, labels_as_classes(y, problem.classes))
        cm = metricsmod.confusion_counts(truth, class_index(scores), k)
        comm.reduce_sum_to_root(cm)
        labels = problem.class_names if problem.class_names and len(problem.class_names) == k else problem.classes.tolist()
        return metricsmod.classification_report(cm, labels) if comm.rank == 0 else None
    # Not reshape(len(y), -1): a rank that holds no test rows has nothing to infer -1 from.
    yv = np.asarray(y, dtype=np.float64).reshape(len(y), model.layer_sizes[-1])
    first = comm.allreduce(metricsmod.regression_first_pass(yv), "sum")
    mean = first[1:] / max(first[0], 1)
    second = comm.reduce_sum_to_root(metricsmod.regression_second_pass(yv, scores.astype(np.float64), mean))
    return metricsmod.regression_report(first, second) if comm.rank == 0 else None


# Rows scored at a time by evaluate_rows: one block of scaled features and scores is held.
EVAL_BLOCK = 1 << 16


def evaluate_rows(fitted, problem, local, comm, block=EVAL_BLOCK):
    """The metrics of ``fitted`` over every rank's rows ``local`` (ascending positions in
    problem.X; None: all of them), collective, the report valid on rank 0.

    Each rank scores its own rows ``block`` at a time and keeps partial sums only (a confusion
    matrix; regression sums), reduced once: per-rank memory is its shard plus one block,
    whatever the file's size or the rank count. The numbers are evaluate()'s."""
    model = fitted._model
    n = problem.X.shape[0] if local is None else len(local)

    def blocks():
        for lo in range(0, n, block):
            take = slice(lo, min(lo + block, n)) if local is None else local[lo:lo + block]
            X = problem.X[take]
            # A slice is a view of the shard, which scale_features would scale in place.
            X = fitted.scale_features(X.copy() if isinstance(take, slice) else X)
            yield problem.y[take], model.forward(fitted._params, X)

    if problem.task == "classify":
        k = len(problem.classes)
        cm = np.zeros((k, k), dtype=np.int64)
        for y, scores in blocks():
            truth = np.searchsorted(problem.classes, labels_as_classes(y, problem.classes))
            cm += metricsmod.confusion_counts(truth, class_index(scores), k)
        comm.reduce_sum_to_root(cm)
        labels = problem.class_names if problem.class_names and len(problem.class_names) == k else problem.classes.tolist()
        return metricsmod.classification_report(cm, labels) if comm.rank == 0 else None
    width = model.layer_sizes[-1]
    y_all = problem.y if local is None else problem.y[local]  # targets: n/N values, kept for two passes
    yv = np.asarray(y_all, dtype=np.float64).reshape(len(y_all), width)
    first = comm.allreduce(metricsmod.regression_first_pass(yv), "sum")
    mean = first[1:] / max(first[0], 1)
    second = np.zeros(3 * width)
    for lo, (_, scores) in zip(range(0, n, block), blocks()):
        second += metricsmod.regression_second_pass(yv[lo:lo + block], scores.astype(np.float64), mean)
    comm.reduce_sum_to_root(second)
    return metricsmod.regression_report(first, second) if comm.rank == 0 else None


EVAL_ROWS = ("test", "train", "all")


def rows_to_score(choice, split, n_rows, path):
    """Which rows of a file `mpinn eval` scores: (name, their count or None for all, note).

    ``split`` is the checkpoint's recorded --test-fraction split (checkpoint.recorded_split).
    ``choice`` None picks the held-out rows when there is a split of a file with ``n_rows``
    rows, else all rows; 'test' and 'train' need that split, and each rank finds its own of
    those rows with chosen_rows.
    """
    from mpinn.data.schedule import held_out_count
    from mpinn.errors import InputError

    same_file = bool(split) and split["n_rows"] == n_rows
    if choice is None:
        choice = "test" if same_file else "all"
    if choice == "all":
        note = (f"{n_rows}; the model's --test-fraction split was of a {split['n_rows']}-row file"
                if split and not same_file else f"{n_rows}")
        return "all", None, note
    if not split:
        raise InputError(f"--rows {choice}: the model was trained without --test-fraction, so no rows "
                         "were held out; use --rows all")
    if not same_file:
        raise InputError(f"--rows {choice}: {path} has {n_rows} rows, but the model's --test-fraction "
                         f"split was drawn over a file of {split['n_rows']} rows")
    n_test = held_out_count(n_rows, split["test_fraction"])
    count = n_test if choice == "test" else n_rows - n_test
    return choice, count, (f"{count} of {n_rows}: {'held out' if choice == 'test' else 'trained on'} "
                           f"with --test-fraction {split['test_fraction']:g} --seed {split['seed']}")


def chosen_rows(choice, split, shard):
    """This rank's rows of the recorded split's ``choice`` ('test' or 'train') as ascending
    local positions in ``shard``, redrawn exactly as training drew them (schedule.split_part)."""
    from mpinn.data.schedule import split_part

    # Checkpoints written before the keyed permutation existed used sklearn's.
    return split_part(split["n_rows"], split["test_fraction"], split["seed"], shard,
                      split.get("permutation", "sklearn"), choice)


def test_fields(report):
    """The epoch record's test_* entries from a report."""
    if "accuracy" in report:
        return {"test_accuracy": report["accuracy"], "test_f1_macro": report["f1_macro"],
                "test_precision_macro": report["precision_macro"], "test_recall_macro": report["recall_macro"]}
    return {"test_r2": report["r2"], "test_mse": report["mse"], "test_mae": report["mae"]}
