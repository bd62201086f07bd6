"""Reading a CSV file for `mpinn data convert`: the header, pandas' index column, the choice of
columns and missing values. Serial, no MPI.

Every message names a row by its line in the file (1-based, as an editor shows it; a quoted
cell spanning lines counts its last line), whatever the check that fails.
"""

from __future__ import annotations

import csv

import numpy as np

from mpinn.errors import InputError

# The strings pandas.read_csv reads as missing (its default na_values), so what
# DataFrame.to_csv writes for NaN (an empty cell, or na_rep such as 'nan') is missing here too.
NA_STRINGS = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                        "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"])
NA_CHOICES = ("fail", "drop")


def fail(msg):
    raise InputError(f"data convert: {msg}")


def is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_delimiter(text):
    """One character; 'tab' or a typed backslash-t mean a tab."""
    text = "\t" if text in ("tab", "\\t") else text
    if not isinstance(text, str) or len(text) != 1 or text in "\"\r\n":
        fail(f"--delimiter must be one character (e.g. ',', ';' or tab), got {text!r}")
    return text


def column_index(spec, n_cols, header, src):
    """A column given by name (with a header), or by 0-based position (negative from the end)."""
    if isinstance(spec, str):
        if header is not None and spec in header:
            return header.index(spec)
        try:
            spec = int(spec)
        except ValueError:
            if header is None:
                fail(f"column '{spec}' given by name but {src} has no header row")
            fail(f"column '{spec}' not found in {src} (columns: {', '.join(header)})")
    if isinstance(spec, bool) or not isinstance(spec, (int, np.integer)):
        fail(f"a column must be a name or an integer index, got {spec!r}")
    if not -n_cols <= spec < n_cols:
        fail(f"column index {spec} out of range for {n_cols} columns in {src}")
    return int(spec) % n_cols


def _as_list(columns):
    if columns is None:
        return None
    items = columns.split(",") if isinstance(columns, str) else list(columns)
    return [c.strip() if isinstance(c, str) else c for c in items if not (isinstance(c, str) and not c.strip())]


def _read_table(path, src, delimiter):
    """(header or None, rows of stripped cells, the file line of each row); blank lines skipped."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        rows, lines = [], []
        for row in reader:
            if row and any(c.strip() for c in row):
                rows.append([c.strip() for c in row])
                lines.append(reader.line_num)
    if not rows:
        fail(f"{src} is empty")
    # A header has a cell that is neither a number nor a missing value.
    header = rows[0] if any(not is_number(c) and c not in NA_STRINGS for c in rows[0]) else None
    if header is not None:
        rows, lines = rows[1:], lines[1:]
    if not rows:
        fail(f"{src} has a header but no data rows")
    n_cols = len(header) if header is not None else len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != n_cols:
            fail(f"{src} line {line} has {len(row)} columns, expected {n_cols}")
    if n_cols < 2:
        other = next((d for d in ";\t|" if d != delimiter and d in (header or rows[0])[0]), None)
        hint = f" (is it {other!r}-separated? pass --delimiter {other!r})" if other else ""
        fail(f"{src} needs at least two columns (features and a label), found {n_cols}{hint}")
    return header, rows, lines


def _is_pandas_index(header, rows):
    """DataFrame.to_csv's index column: first header cell empty, values 0..n-1."""
    return header is not None and header[0] == "" and all(r[0] == str(i) for i, r in enumerate(rows))


def _choose_columns(features, drop, label, n_cols, header, names, skip, src):
    """Feature column positions: --features in the order given, else every column but the
    label, the index column (``skip``) and --drop's."""
    features, drop = _as_list(features), _as_list(drop)
    if features and drop:
        fail("give --features or --drop, not both")
    if features:
        cols = [column_index(c, n_cols, header, src) for c in features]
        if len(set(cols)) != len(cols):
            fail(f"--features names a column twice: {', '.join(map(str, features))}")
    else:
        gone = {column_index(c, n_cols, header, src) for c in drop or []}
        if label in gone:
            fail(f"--drop names the label column '{names[label]}'")
        cols = [j for j in range(n_cols) if j != label and j not in skip and j not in gone]
    if label in cols:
        fail(f"column '{names[label]}' is the label; it cannot also be a feature")
    if not cols:
        fail(f"no feature columns left in {src}")
    return cols


def _numbers(cells, name, src, lines):
    """A feature column as float64 (missing values as NaN); text fails naming its line."""
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(cells))
    for i, cell in enumerate(cells):
        if cell in NA_STRINGS:
            out[i] = np.nan
        elif is_number(cell):
            out[i] = float(cell)
        else:
            fail(f"feature column '{name}' in {src} is not numeric: line {lines[i]} has {cell!r}")
    return out


def read_csv(path, src, label_column=None, *, na="fail", features=None, drop=None, delimiter=","):
    """(X float64, label cells as a str array, feature names or None, label column name, notes).

    ``na`` 'fail' stops at the first row with a missing value (a NA_STRINGS cell) in a column
    used, naming its line; 'drop' leaves such rows out and says which in a note. An infinite
    feature value always fails.
    """
    if na not in NA_CHOICES:
        fail(f"--na must be one of {', '.join(NA_CHOICES)}, got {na!r}")
    header, rows, lines = _read_table(path, src, parse_delimiter(delimiter))
    n_cols = len(rows[0])
    names = header if header is not None else [f"column {j}" for j in range(n_cols)]
    label = column_index(-1 if label_column is None else label_column, n_cols, header, src)
    notes = []
    index = label != 0 and not features and _is_pandas_index(header, rows)
    if index:
        notes.append(f"{src}: the first column has no name and holds 0..{len(rows) - 1}: "
                     "read as the index pandas writes, and dropped")
    cols = _choose_columns(features, drop, label, n_cols, header, names, {0} if index else set(), src)
    if header is not None and header[0] == "" and 0 in cols and not index:
        notes.append(f"{src}: the first column has no name; kept as a feature (--drop 0 leaves it out)")

    X = np.empty((len(rows), len(cols)))
    for out_j, j in enumerate(cols):
        X[:, out_j] = _numbers([r[j] for r in rows], names[j], src, lines)
    labels = np.array([r[label] for r in rows])
    missing = np.isnan(X).any(axis=1) | np.isin(labels, list(NA_STRINGS))
    if missing.any():
        first = int(np.argmax(missing))
        if na == "fail":
            row = rows[first]
            j = next(j for j in sorted(cols + [label])
                     if row[j] in NA_STRINGS or (j != label and np.isnan(X[first, cols.index(j)])))
            cell = row[j]
            fail(f"{src} line {lines[first]}: {'empty cell' if cell == '' else f'missing value {cell!r}'} in "
                 f"column '{names[j]}' (--na drop leaves out rows with missing values)")
        dropped = [lines[i] for i in np.flatnonzero(missing)]
        if len(dropped) == len(rows):
            fail(f"{src}: every row has a missing value; nothing left after --na drop")
        shown = ", ".join(map(str, dropped[:5])) + (", ..." if len(dropped) > 5 else "")
        notes.append(f"{src}: dropped {len(dropped)} row(s) with missing values (line {shown})")
        keep = ~missing
        X, labels = X[keep], labels[keep]
        lines = [line for line, k in zip(lines, keep) if k]
    bad = ~np.isfinite(X)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        fail(f"{src} line {lines[i]}: column '{names[cols[k]]}' holds {X[i, k]} (features must be finite)")
    return X, labels, ([names[j] for j in cols] if header is not None else None), names[label], notes
