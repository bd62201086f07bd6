"""`mpinn predict`: score every row of a file and write the predictions, in rounds of rows so
that no rank's memory grows with the file.

Round r covers the global rows [r R, (r+1) R) (R = ``round_rows``, at least one per rank): each
rank reads and scores its contiguous N-th of them, and one Gatherv brings the round's outputs to
rank 0 in row order, which writes them as one slab of each output dataset. Rank 0 holds one
round (R rows of outputs, R/N rows of features) at a time, whatever the number of rows; the
other ranks R/N rows. The file is written under a temporary name and renamed when complete
(atomic.py), as every file mpinn writes.

Output datasets (docs/data-format.md): ``y_pred`` (the labels, as strings when the training
data had class names, or the values), ``y_pred_code`` (the class codes, with class names),
``proba`` (classifiers: one column per class, in class order).
"""

from __future__ import annotations

import json

import numpy as np

from mpinn.data.partition import even_bounds
from mpinn.errors import InputError
from mpinn.nn.fitted import class_index, class_proba

# Rows scored per round over all ranks: rank 0 holds this many rows of outputs at a time.
ROUND_ROWS = 1 << 16


def predict_to_file(fitted, path, x_name, out, comm, round_rows=ROUND_ROWS):
    """Collective: write the predictions of ``fitted`` for every row of ``path`` to ``out``;
    returns the number of rows. Raises InputError on every rank for a file that does not fit
    the model, before anything is written."""
    import h5py

    from mpinn.data import hdf5 as datamod
    from mpinn.atomic import AtomicH5
    from mpinn.data.columns import plan_columns
    from mpinn.parallel.agree import collective_check, on_root

    info = datamod.DataInfo(**on_root(
        comm, lambda: datamod.inspect(path, x_name, require_y=False).to_json()))
    # The file's columns by name when the model and the file both name them (reordered,
    # categories matched); by position otherwise.
    plan = plan_columns(fitted.feature_names, fitted.encoding, info.feature_names, info.encoding, path)
    if plan is None and info.n_features != fitted.n_features_in_:
        raise InputError(f"{path}: {info.n_features} features but the model expects {fitted.n_features_in_}")
    n, size = info.n_rows, comm.size
    per_round = max(int(round_rows), size)
    outputs = _Outputs(fitted, n)
    target = AtomicH5(out)

    def start():
        try:
            outputs.create(target.open())
        except OSError as exc:
            target.discard()
            raise InputError(f"--out: cannot write {out}: {exc}") from None

    on_root(comm, start)
    try:
        with h5py.File(path, "r") as f:
            X = f[x_name]
            for lo in range(0, n, per_round):
                hi = min(lo + per_round, n)
                bounds = even_bounds(hi - lo, size, lo)
                a, b = bounds[comm.rank], bounds[comm.rank + 1]
                rows = X[a:b] if b > a else np.zeros((0, info.n_features))
                if plan is not None:  # a collective check every round, on every rank alike
                    collective_check(comm, plan.unseen_problem(rows, info.feature_names, path, a))
                    rows = plan.apply(rows)
                scores = fitted.forward(rows) if b > a else np.zeros((0, fitted.n_outputs_))
                scores = comm.gather_rows(np.ascontiguousarray(scores, dtype=np.float64))
                if comm.rank == 0:
                    outputs.write(lo, scores)
                del scores  # before the next round's: one round's outputs at a time
    except BaseException:
        if comm.rank == 0:
            target.discard()
        raise
    if comm.rank == 0:
        target.close()
    return n


class _Outputs:
    """The output datasets of a fitted model for n rows, created empty and written slab by slab."""

    def __init__(self, fitted, n):
        self.fitted, self.n = fitted, n
        self.classify = fitted.task == "classify"
        if self.classify:
            # Codes written by `data convert` for string labels give their strings back, as
            # FittedMLP.predict does (fitted.class_labels): both are written then.
            classes, names = fitted.classes_, fitted.class_names
            self.codes = bool(names) and classes.dtype.kind in "iu" and len(classes) > 0 \
                and 0 <= classes.min() and classes.max() < len(names)

    def create(self, f):
        import h5py

        fitted, n = self.fitted, self.n
        if self.classify:
            labels = fitted.labels_
            if labels.dtype.kind == "U":  # HDF5 has no numpy unicode type: UTF-8 strings
                f.create_dataset("y_pred", (n,), dtype=h5py.string_dtype())
            else:
                f.create_dataset("y_pred", (n,), dtype=labels.dtype)
            if self.codes:
                f.create_dataset("y_pred_code", (n,), dtype=fitted.classes_.dtype)
            f.create_dataset("proba", (n, max(2, fitted.n_outputs_)), dtype=np.float64)
            if fitted.class_names:
                f.attrs["class_names"] = json.dumps(fitted.class_names)
        else:
            k = fitted.n_outputs_
            f.create_dataset("y_pred", (n,) if k == 1 else (n, k), dtype=np.float64)
        f.attrs["mpinn_format"] = "mpinn-predictions"
        self.datasets = {name: f[name] for name in f}  # (looking one up costs a millisecond)

    def write(self, lo, scores):
        f, hi = self.datasets, lo + len(scores)
        if not self.classify:
            f["y_pred"][lo:hi] = scores[:, 0] if scores.shape[1] == 1 else scores
            return
        index = class_index(scores)
        labels = self.fitted.labels_[index]
        f["y_pred"][lo:hi] = labels.astype(object) if labels.dtype.kind == "U" else labels
        if self.codes:
            f["y_pred_code"][lo:hi] = self.fitted.classes_[index]
        f["proba"][lo:hi] = class_proba(scores)
