"""`mpinn predict`: score every row of a file and write the predictions, in rounds of rows so
that no rank's memory grows with the file, and no row passes through another rank.

Rank r owns the r-th contiguous block of rows (rank_bounds: whole runs of ALIGN_ROWS rows) and
scores it ``rows_per_rank`` rows per round, so a round covers N times more rows on N ranks and
the number of rounds does not grow with N. As the blocks start where a 1-rank run's chunks do,
the output is the same bytes on any rank count. Rank 0 creates the output file under a
temporary name, its numeric datasets contiguous and allocated at once, and broadcasts where
each dataset's bytes start; every rank then writes its rows' bytes at their offsets in the file
(os.pwrite: disjoint ranges, no locking, no gather). String labels (variable-length in HDF5,
so not at known offsets) are written by each rank in turn, from the class indices it kept (one
small integer a row). Any rank's failure is every rank's, and the file appears under its final
name only complete (atomic.py's rename).

Why offsets rather than one part file per rank joined by an HDF5 virtual dataset: the output
stays one ordinary file that can be moved or copied alone, readers need no VDS support, and
the bytes are written once (docs/performance.md, "Predictions in rounds").

Output datasets (docs/data-format.md): ``y_pred`` (the labels, as strings when the training
data had class names, or the values), ``y_pred_code`` (the class codes, with class names),
``proba`` (classifiers: one column per class, in class order).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from mpinn.data.partition import even_bounds
from mpinn.errors import InputError
from mpinn.nn.fitted import class_index, class_proba

# Rows each rank scores per round: it holds this many rows of features and outputs at a time.
ROWS_PER_RANK = 1 << 16
# A rank's block starts at a multiple of this: FittedMLP.forward scores rows this many at a time
# (MLP.forward's chunk_rows), and BLAS may round a row's score differently by its place in a
# chunk (float32 GEMM edge tiles, by an ulp), so blocks that start elsewhere would give other
# bytes than one rank does. A multiple of it per round (ROWS_PER_RANK) keeps the chunks aligned.
ALIGN_ROWS = 8192


def rank_bounds(n, size, align=ALIGN_ROWS):
    """Rank r predicts rows [b[r], b[r+1]): whole runs of ``align`` rows (the last run may be
    shorter), spread as evenly as whole runs allow, so ranks differ by at most ``align`` rows."""
    return [min(b * align, n) for b in even_bounds(-(-n // align), size)]


def predict_to_file(fitted, path, x_name, out, comm, rows_per_rank=ROWS_PER_RANK):
    """Collective: write the predictions of ``fitted`` for every row of ``path`` to ``out``;
    returns the number of rows. Raises InputError on every rank for a file that does not fit
    the model, before anything is written under ``out``."""
    from mpinn.data import hdf5 as datamod
    from mpinn.atomic import AtomicH5
    from mpinn.data.columns import plan_columns
    from mpinn.parallel.agree import agree, on_root

    info = datamod.DataInfo(**on_root(
        comm, lambda: datamod.inspect(path, x_name, require_y=False).to_json()))
    # The file's columns by name when the model and the file both name them (reordered,
    # categories matched); by position otherwise.
    plan = plan_columns(fitted.feature_names, fitted.encoding, info.feature_names, info.encoding, path)
    if plan is None and info.n_features != fitted.n_features_in_:
        raise InputError(f"{path}: {info.n_features} features but the model expects {fitted.n_features_in_}")
    n, size = info.n_rows, comm.size
    per_round = max(1, int(rows_per_rank))
    bounds = rank_bounds(n, size)
    first, last = bounds[comm.rank], bounds[comm.rank + 1]
    n_rounds = math.ceil(max(b - a for a, b in zip(bounds[:-1], bounds[1:])) / per_round)
    outputs = _Outputs(fitted, n)
    target = AtomicH5(out)

    def start():
        try:
            layout = outputs.create(target.open())
            target.file.close()  # complete on disk: the ranks write raw bytes into it
            return {"tmp": target.tmp, "layout": layout}
        except OSError as exc:
            target.discard()
            raise InputError(f"--out: cannot write {out}: {exc}") from None

    made = on_root(comm, start)
    try:
        failure = _write_rows(fitted, path, x_name, info, plan, outputs, made, out, comm, first, last, per_round,
                              n_rounds)
        agree(comm, failure)  # the one collective of a run without column checks
        outputs.write_strings(comm, made["tmp"], per_round)
    except BaseException:
        if comm.rank == 0:
            target.discard()
        raise
    on_root(comm, target.close)
    return n


def _write_rows(fitted, path, x_name, info, plan, outputs, made, out, comm, first, last, per_round, n_rounds):
    """This rank's rows [first, last), scored and written at their offsets, ``per_round`` at a
    time; returns this rank's failure (or None) for the caller to agree on. With a column plan,
    every round ends in a collective agreement (the unseen-category check), so a failure on any
    rank stops every rank at the same round; without one no rank waits for another here."""
    import h5py

    from mpinn.parallel.agree import agree

    opened = {}

    def one_round(a, b):
        if not opened:  # opened in the first round, so that a failure to open is a round's failure
            opened["fd"] = _open_for_rows(made["tmp"], out, comm.rank)
            opened["file"] = h5py.File(path, "r")
        rows = opened["file"][x_name][a:b] if b > a else np.zeros((0, info.n_features))
        if plan is not None:
            problem = plan.unseen_problem(rows, info.feature_names, path, a)
            if problem is not None:
                raise InputError(problem)
            rows = plan.apply(rows)
        if b > a:  # outputs from float64 scores, whatever the model's dtype (as before)
            # The rows just read are this round's own: scaled in place (forward(rows) would copy them).
            scores = fitted.forward(fitted.scale_features(rows), scaled=True)
            outputs.write(opened["fd"], made["layout"], a, np.asarray(scores, dtype=np.float64))

    failure = None
    try:
        for r in range(n_rounds):  # the same count on every rank
            if failure is None:
                try:
                    one_round(min(first + r * per_round, last), min(first + (r + 1) * per_round, last))
                except BaseException as exc:  # noqa: BLE001 - agreed on, here or by the caller
                    failure = exc
            if plan is not None:
                agree(comm, failure)
            elif failure is not None:
                break
        if failure is None and opened:
            os.fsync(opened["fd"])
    except BaseException as exc:  # noqa: BLE001 - agree raised it on every rank alike, or fsync failed
        failure = failure or exc
    finally:
        if "file" in opened:
            opened["file"].close()
        if "fd" in opened:
            os.close(opened["fd"])
    return failure


class _Outputs:
    """The output datasets of a fitted model for n rows: created by rank 0, numeric ones written
    by every rank at byte offsets, the string labels by each rank in turn."""

    def __init__(self, fitted, n):
        self.fitted, self.n = fitted, n
        self.classify = fitted.task == "classify"
        self.strings = self.classify and fitted.labels_.dtype.kind == "U"
        self.codes = False
        if self.classify:
            # Codes written by `data convert` for string labels give their strings back, as
            # FittedMLP.predict does (fitted.class_labels): both are written then.
            classes, names = fitted.classes_, fitted.class_names
            self.codes = bool(names) and classes.dtype.kind in "iu" and len(classes) > 0 \
                and 0 <= classes.min() and classes.max() < len(names)
        # String labels: this rank's class indices, written as strings once every rank is done.
        self.kept = []

    def create(self, f):
        """Create the datasets in ``f`` (rank 0); returns {name: [byte offset, dtype, row shape]}
        of those written at offsets."""
        import h5py

        fitted, n = self.fitted, self.n
        numeric = {}
        if self.classify:
            if self.strings:  # HDF5 has no numpy unicode type: UTF-8 strings
                f.create_dataset("y_pred", (n,), dtype=h5py.string_dtype())
            else:
                numeric["y_pred"] = (fitted.labels_.dtype, ())
            if self.codes:
                numeric["y_pred_code"] = (fitted.classes_.dtype, ())
            numeric["proba"] = (np.dtype(np.float64), (max(2, fitted.n_outputs_),))
            if fitted.class_names:
                f.attrs["class_names"] = json.dumps(fitted.class_names)
        else:
            k = fitted.n_outputs_
            numeric["y_pred"] = (np.dtype(np.float64), () if k == 1 else (k,))
        f.attrs["mpinn_format"] = "mpinn-predictions"
        layout = {}
        for name, (dtype, row) in numeric.items():
            layout[name] = [_allocated(f, name, (n, *row), dtype), dtype.str, list(row)]
        return layout

    def write(self, fd, layout, lo, scores):
        """Write the outputs of rows [lo, lo + len(scores)) at their offsets in the file ``fd``."""
        values = {}
        if not self.classify:
            values["y_pred"] = scores[:, 0] if scores.shape[1] == 1 else scores
        else:
            index = class_index(scores)
            if self.strings:
                self.kept.append(index.astype(np.min_scalar_type(max(1, len(self.fitted.labels_) - 1))))
            else:
                values["y_pred"] = self.fitted.labels_[index]
            if self.codes:
                values["y_pred_code"] = self.fitted.classes_[index]
            values["proba"] = class_proba(scores)
        for name, value in values.items():
            offset, dtype, row = layout[name]
            data = np.ascontiguousarray(value, dtype=np.dtype(dtype))
            _pwrite_all(fd, data, offset + lo * data.itemsize * int(np.prod(row, dtype=np.int64)))

    def write_strings(self, comm, tmp, block):
        """Collective: the string labels, each rank its block of rows in rank order (a variable-length
        dataset has no known offsets); nothing to do for other models."""
        import h5py

        if not self.strings:
            return
        from mpinn.parallel.agree import run_agreed

        index = np.concatenate(self.kept) if self.kept else np.zeros(0, np.int64)
        self.kept = []
        lo = rank_bounds(self.n, comm.size)[comm.rank]
        for turn in range(comm.size):
            def write():
                if comm.rank == turn and len(index):
                    with h5py.File(tmp, "r+") as f:
                        for start in range(0, len(index), block):  # as strings, a block at a time
                            part = index[start:start + block]
                            f["y_pred"][lo + start:lo + start + len(part)] = self.fitted.labels_[part].astype(object)
            run_agreed(comm, write)  # one rank at a time; a failure is every rank's


def _allocated(f, name, shape, dtype):
    """Create a contiguous dataset whose space is allocated now (not at first write) and never
    filled; returns the byte offset of its data in the file."""
    import h5py

    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    space = h5py.h5s.create_simple(shape)
    dset = h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl)
    return int(dset.get_offset())


def _open_for_rows(tmp, out, rank):
    try:
        return os.open(tmp, os.O_WRONLY)
    except OSError as exc:
        raise InputError(f"--out: rank {rank} cannot open {out} being written ({exc.strerror}): every rank "
                         "writes its own rows, so the output must be on a file system all ranks share") from None


def _pwrite_all(fd, data, offset):
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
