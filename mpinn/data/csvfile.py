"""Reading a CSV file for `mpinn data convert`: the header, pandas' index column, the choice of
columns, numbers, booleans and categorical columns (one-hot), missing values. Serial, no MPI.
Parquet tables (parquetfile.py) go through the same encode_cells.

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


def _read_table(path, src, delimiter, min_cols):
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
    if n_cols < min_cols:
        other = next((d for d in ";\t|" if d != delimiter and d in (header or rows[0])[0]), None)
        hint = f" (is it {other!r}-separated? pass --delimiter {other!r})" if other else ""
        fail(f"{src} needs at least two columns (features and a label), found {n_cols}{hint}")
    return header, rows, lines


def _index_note(header, rows, src):
    """A note when the first column is DataFrame.to_csv's index (an empty first header cell,
    whatever its values: a row subset keeps its row labels), else None."""
    if header is None or header[0] != "":
        return None
    if all(r[0] == str(i) for i, r in enumerate(rows)):
        return f"{src}: the first column has no name and holds 0..{len(rows) - 1}: read as the index pandas writes, and dropped"
    shown = ", ".join(r[0] for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
    return (f"{src}: the first column has no name ({shown}): read as the index pandas writes, and dropped "
            "(--features 0,... keeps it)")


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
        if label is not None and label in gone:
            fail(f"--drop names the label column '{names[label]}'")
        cols = [j for j in range(n_cols) if j != label and j not in skip and j not in gone]
    if label is not None and label in cols:
        fail(f"column '{names[label]}' is the label; it cannot also be a feature")
    if not cols:
        fail(f"no feature columns left in {src}")
    return cols


# Booleans as pandas writes them (DataFrame.to_csv, get_dummies' columns) and as Parquet holds them.
BOOL_TEXT = {"True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0, "TRUE": 1.0, "FALSE": 0.0}
# --categorical auto refuses a text column with more categories than this (an id or free text,
# not a category): naming it in --categorical encodes it anyway.
AUTO_MAX_CATEGORIES = 256


def _numbers(cells, name, src, lines, unit, hint=""):
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
            fail(f"feature column '{name}' in {src} is not numeric: {unit} {lines[i]} has {cell!r}{hint}")
    return out


def _column_kind(cells):
    """'number', 'bool', 'text' or 'mixed' (numbers and text: a mistyped number, most likely)
    from the cells that are not missing."""
    present = [c for c in cells if c not in NA_STRINGS]
    numbers = sum(is_number(c) for c in present)
    if numbers == len(present):
        return "number"
    if all(c in BOOL_TEXT for c in present):
        return "bool"
    return "mixed" if numbers else "text"


def _categorical_columns(spec, n_cols, header, src):
    """--categorical: 'auto' (None) -> 'auto', 'none' -> set(), names or positions -> their set."""
    if spec is None or spec == "auto":
        return "auto"
    if spec == "none":
        return set()
    return {column_index(c, n_cols, header, src) for c in _as_list(spec)}


def encode_cells(header, rows, lines, src, label_column=None, *, na="fail", features=None, drop=None,
                 categorical=None, no_label=False, unit="line"):
    """Rows of text cells -> (X float64, label cells as a str array or None, feature names or None,
    label column name or None, notes, categories {column: sorted categories}, input columns).

    A column is a number, a boolean (True/False -> 1/0) or, when ``categorical`` says so
    ('auto': any other text column; or names/positions), categorical: one-hot encoded in place
    as the features ``column=category``. ``na`` 'fail' stops at the first row with a missing
    value (a NA_STRINGS cell) in a column used, naming its ``unit`` (file line, or row);
    'drop' leaves such rows out and says which in a note. An infinite feature value always fails.
    """
    if na not in NA_CHOICES:
        fail(f"--na must be one of {', '.join(NA_CHOICES)}, got {na!r}")
    n_cols = len(rows[0])
    names = header if header is not None else [f"column {j}" for j in range(n_cols)]
    label = None if no_label else column_index(-1 if label_column is None else label_column, n_cols, header, src)
    if no_label and label_column is not None:
        fail("--label-column and --no-label exclude each other")
    notes = []
    skip = set()
    note = None if features or label == 0 else _index_note(header, rows, src)
    if note:
        notes.append(note)
        skip.add(0)
    cols = _choose_columns(features, drop, label, n_cols, header, names, skip, src)
    chosen = _categorical_columns(categorical, n_cols, header, src)

    blocks, out_names, categories = [], [], {}
    for j in cols:
        cells = [r[j] for r in rows]
        kind = _column_kind(cells)
        if chosen == "auto" and kind == "text" or chosen != "auto" and j in chosen:
            present = sorted({c for c in cells if c not in NA_STRINGS})
            if chosen == "auto" and len(present) > AUTO_MAX_CATEGORIES:
                fail(f"feature column '{names[j]}' in {src} holds {len(present)} different texts; too many for "
                     f"--categorical auto (at most {AUTO_MAX_CATEGORIES}): name it in --categorical to "
                     "one-hot encode it anyway, or --drop it")
            codes = {c: k for k, c in enumerate(present)}
            block = np.zeros((len(rows), len(present)))
            for i, c in enumerate(cells):
                if c in codes:
                    block[i, codes[c]] = 1.0
                else:
                    block[i, :] = np.nan  # missing: --na decides
            blocks.append(block)
            categories[names[j]] = present
            out_names.extend(f"{names[j]}={c}" for c in present)
            notes.append(f"{src}: column '{names[j]}' is categorical: {len(present)} categories, one-hot encoded")
        elif kind == "bool":
            blocks.append(np.array([BOOL_TEXT.get(c, np.nan) for c in cells]).reshape(-1, 1))
            out_names.append(names[j])
        else:
            hint = " (--categorical auto one-hot encodes text columns)" if kind == "text" else \
                f" (--categorical {names[j]} one-hot encodes its values)" if kind == "mixed" else ""
            blocks.append(_numbers(cells, names[j], src, lines, unit, hint).reshape(-1, 1))
            out_names.append(names[j])
    X = np.hstack(blocks)
    owner = [j for j, b in zip(cols, blocks) for _ in range(b.shape[1])]  # the source column of each feature
    labels = None if label is None else np.array([r[label] for r in rows])
    missing = np.isnan(X).any(axis=1)
    if labels is not None:
        missing |= np.isin(labels, list(NA_STRINGS))
    if missing.any():
        first = int(np.argmax(missing))
        if na == "fail":
            row = rows[first]
            j = next(j for j in sorted(cols + ([] if label is None else [label])) if row[j] in NA_STRINGS
                     or (j != label and np.isnan(X[first, owner.index(j)])))
            cell = row[j]
            fail(f"{src} {unit} {lines[first]}: {'empty cell' if cell == '' else f'missing value {cell!r}'} in "
                 f"column '{names[j]}' (--na drop leaves out rows with missing values)")
        dropped = [lines[i] for i in np.flatnonzero(missing)]
        if len(dropped) == len(rows):
            fail(f"{src}: every row has a missing value; nothing left after --na drop")
        shown = ", ".join(map(str, dropped[:5])) + (", ..." if len(dropped) > 5 else "")
        notes.append(f"{src}: dropped {len(dropped)} row(s) with missing values ({unit} {shown})")
        keep = ~missing
        X = X[keep]
        labels = None if labels is None else labels[keep]
        lines = [line for line, k in zip(lines, keep) if k]
    bad = ~np.isfinite(X)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        fail(f"{src} {unit} {lines[i]}: column '{names[owner[k]]}' holds {X[i, k]} (features must be finite)")
    named = header is not None
    return (X, labels, out_names if named or categories else None, None if label is None else names[label], notes,
            categories, [names[j] for j in cols])


def read_csv(path, src, label_column=None, *, na="fail", features=None, drop=None, delimiter=",",
             categorical=None, no_label=False):
    """A CSV file read by encode_cells (its rows named by file line)."""
    header, rows, lines = _read_table(path, src, parse_delimiter(delimiter), 1 if no_label else 2)
    return encode_cells(header, rows, lines, src, label_column, na=na, features=features, drop=drop,
                        categorical=categorical, no_label=no_label)
