"""scikit-learn's early-stopping hold-out, one implementation for the estimators and for
`mpinn train --early-stopping`. MPI only through the communicator passed in.

scikit-learn's MLP holds out its validation rows with ``train_test_split(X, y,
test_size=validation_fraction, random_state=<its RandomState>, stratify=<y if the classifier has
one output>)``, right after drawing the initial weights and before the first shuffle. Both mpinn
paths call ``hold_out`` at that same point of the same RandomState, so they hold out the same
rows and then draw the same batches: the CLI run and the estimator train the same model.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from mpinn.data import inputs
from mpinn.data.schedule import TrainRows
from mpinn.errors import InputError
from mpinn.nn.model import encode_targets
from mpinn.train.problem import labels_as_classes

TOO_SMALL = "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."


def hold_out(train_rows, fraction, random_state, shard, comm, binary_labels=None):
    """Split the training rows: (the rows left to train on, as TrainRows; this rank's
    validation rows, as local positions in the split's order). The same on every rank.

    ``train_rows``: TrainRows, or the global ids of the training rows. ``binary_labels``: for a
    classifier with one output (binary), each local row's 0/1 target, which stratifies the split
    as scikit-learn's does; None otherwise (multiclass, multilabel and regression are not
    stratified, as in scikit-learn). Raises ValueError with scikit-learn's messages.
    Training rows of the keyed permutation (no global order of them exists) are held out by a
    keyed permutation instead, O(n/N) per rank, not stratified (_hold_out_keyed).
    """
    if not isinstance(train_rows, TrainRows):
        train_rows = TrainRows.from_array(train_rows, shard)
    if train_rows.rows is None:
        return _hold_out_keyed(train_rows, fraction, random_state)
    stratify = None
    if binary_labels is not None:
        # The whole column in training order: each rank fills its rows, the sum joins them.
        column = np.zeros(train_rows.n)
        column[train_rows.index] = np.asarray(binary_labels).reshape(-1)[train_rows.local]
        comm.allreduce(column, "sum")
        stratify = column > 0.5  # scikit-learn stratifies on the binarized y: keys False < True
    train, val = inputs.train_validation_split(train_rows.n, fraction, random_state, stratify)
    if len(val) < 2:
        raise ValueError(TOO_SMALL)
    rows = train_rows.rows
    return TrainRows.from_array(rows[np.asarray(train, dtype=np.int64)], shard), \
        shard.local_positions(rows[np.asarray(val, dtype=np.int64)])[1]


def _hold_out_keyed(train_rows, fraction, random_state):
    """The keyed permutation's hold-out (beyond scikit-learn's size, no global order of the rows):
    ceil(fraction * n) rows, as train_test_split's count, chosen by a keyed permutation of the
    training rows whose key is one draw from ``random_state`` (TrainRows.hold_out_keyed); each
    rank looks at its own rows only. Not stratified: that would need every row's label in order."""
    n_val = math.ceil(fraction * train_rows.n)
    if n_val < 2 or n_val >= train_rows.n:
        raise ValueError(TOO_SMALL)
    return train_rows.hold_out_keyed(n_val, int(random_state.randint(0, 2**63 - 1, dtype=np.int64)))


def hold_out_problem(problem, model, fraction, random_state, comm):
    """`mpinn train --early-stopping`'s split (the estimators split their own arrays): a new
    Problem whose train_rows lose the validation rows and whose val_X / val_Y (targets in the
    model's output space) hold this rank's share of them."""
    p = problem
    binary = labels_as_classes(p.y, p.classes) == p.classes[1] if model.output == "logistic" else None
    try:
        train_rows, local = hold_out(p.train_rows, fraction, random_state, p.shard, comm, binary_labels=binary)
    except ValueError as exc:
        raise InputError(f"--early-stopping: {exc}") from None
    y = p.y[local]
    val_Y = encode_targets(labels_as_classes(y, p.classes) if p.task == "classify" else y, p.classes,
                           model.output, model.dtype)
    return replace(p, train_rows=train_rows, val_X=p.X[local], val_Y=val_Y)


def validation_score(model, params, problem, comm):
    """(score, mean loss) of the validation rows as scikit-learn's early stopping computes them:
    accuracy for classifiers, R2 for regressors. Collective: the same values on every rank."""
    from mpinn.nn import metrics

    p = problem
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model: NaN, reported once
        out = model.forward(params, p.val_X) if len(p.val_X) else np.zeros((0, model.layer_sizes[-1]), model.dtype)
        w = p.val_weight
        head = [model.output_loss_sum(out, p.val_Y, w), len(out) if w is None else float(np.sum(w))]
        if p.task == "classify":
            buf = np.concatenate((head, metrics.accuracy_partial(out, p.val_Y, model.output, len(p.classes), w)))
            comm.allreduce(buf, "sum")
            score = metrics.accuracy(buf[2:])
        else:
            buf = comm.allreduce(np.concatenate((head, metrics.regression_first_pass(p.val_Y, w))), "sum")
            mean = buf[3:] / buf[2]
            second = comm.allreduce(metrics.r2_partial(p.val_Y, out, mean, w), "sum")
            # scikit-learn scores non-finite predictions as NaN
            score = metrics.r2(second) if np.isfinite(second).all() else float("nan")
    return score, float(buf[0] / buf[1])
