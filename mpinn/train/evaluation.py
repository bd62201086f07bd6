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


EVAL_ROWS = ("test", "train", "all")


def rows_to_score(choice, split, n_rows, path):
    """Which rows of a file `mpinn eval` scores: (name, global row ids or None for all, note).

    ``split`` is the checkpoint's recorded --test-fraction split (checkpoint.recorded_split).
    ``choice`` None picks the held-out rows when there is a split of a file with ``n_rows``
    rows, else all rows; 'test' and 'train' need that split and redraw it exactly as training
    did (schedule.split_indices), so the metrics are the training run's test metrics.
    """
    from mpinn.data.schedule import split_indices
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
    # Checkpoints written before the keyed permutation existed used sklearn's.
    train, test = split_indices(n_rows, split["test_fraction"], split["seed"], split.get("permutation", "sklearn"))
    rows = np.sort(test if choice == "test" else train)
    return choice, rows, (f"{len(rows)} of {n_rows}: {'held out' if choice == 'test' else 'trained on'} "
                          f"with --test-fraction {split['test_fraction']:g} --seed {split['seed']}")


def test_fields(report):
    """The epoch record's test_* entries from a report."""
    if "accuracy" in report:
        return {"test_accuracy": report["accuracy"], "test_f1_macro": report["f1_macro"],
                "test_precision_macro": report["precision_macro"], "test_recall_macro": report["recall_macro"]}
    return {"test_r2": report["r2"], "test_mse": report["mse"], "test_mae": report["mae"]}
