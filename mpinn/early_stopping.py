"""scikit-learn's early-stopping hold-out, one implementation for the estimators and for
`mpinn train --early-stopping`. MPI only through the communicator passed in.

scikit-learn's MLP holds out its validation rows with ``train_test_split(X, y,
test_size=validation_fraction, random_state=<its RandomState>, stratify=<y if the classifier has
one output>)``, right after drawing the initial weights and before the first shuffle. Both mpinn
paths call ``hold_out`` at that same point of the same RandomState, so they hold out the same
rows and then draw the same batches: the CLI run and the estimator train the same model.
"""

from __future__ import annotations

import numpy as np

from . import inputs
from .schedule import TrainRows

TOO_SMALL = "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."


def hold_out(train_rows, fraction, random_state, shard, comm, binary_labels=None):
    """Split the training rows: (the rows left to train on, as TrainRows; this rank's
    validation rows, as local positions in the split's order). The same on every rank.

    ``train_rows``: TrainRows, or the global ids of the training rows. ``binary_labels``: for a
    classifier with one output (binary), each local row's 0/1 target, which stratifies the split
    as scikit-learn's does; None otherwise (multiclass, multilabel and regression are not
    stratified, as in scikit-learn). Raises ValueError with scikit-learn's messages.
    """
    if not isinstance(train_rows, TrainRows):
        train_rows = TrainRows.from_array(train_rows, shard)
    if train_rows.rows is None:
        raise ValueError("early stopping holds out rows with scikit-learn's split, which needs the global order "
                         "of the training rows: use --permutation sklearn")
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
