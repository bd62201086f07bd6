"""Reading a Parquet file for `mpinn data convert` (pyarrow, the optional extra
``mpinn[parquet]``). Serial, no MPI.

The table's cells go through the same reading as a CSV's (csvfile.encode_cells): numbers,
booleans, categorical text, missing values (null, NaN) and --na, --features / --drop. Rows are
named by their 0-based position in the table. The index pandas stores with a DataFrame
(``__index_level_0__``, or the columns its metadata lists as the index) is dropped.
"""

from __future__ import annotations

import json
import math

from mpinn.data.csvfile import encode_cells, fail

EXTRA_HINT = "reading Parquet needs pyarrow: pip install 'mpinn[parquet]'"


def _cell(value):
    """A value as the text a CSV would hold: null/NaN '' (missing), booleans True/False,
    floats in their shortest exact form."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    return str(value).strip()


def _index_columns(table):
    """Positions of the columns pandas stored as the DataFrame's index."""
    names = list(table.column_names)
    meta = table.schema.metadata or {}
    stored = []
    if b"pandas" in meta:
        try:
            stored = [c for c in json.loads(meta[b"pandas"]).get("index_columns", []) if isinstance(c, str)]
        except ValueError:
            stored = []
    return [j for j, n in enumerate(names) if n in stored or (n.startswith("__index_level_") and n.endswith("__"))]


def read_parquet(path, src, label_column=None, *, no_label=False, **options):
    """(X, labels, feature names, label name, notes, categories, input columns), as csvfile.read_csv."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        fail(EXTRA_HINT)
    table = pq.read_table(path)
    if table.num_rows == 0:
        fail(f"{src} holds no data rows")
    header = [str(n) for n in table.column_names]
    if len(header) - len(_index_columns(table)) < (1 if no_label else 2):
        fail(f"{src} needs at least two columns (features and a label), found {len(header)}")
    index = _index_columns(table)
    kept = [j for j in range(len(header)) if j not in index]  # before the label: it defaults to the last column
    columns = [[_cell(v) for v in table.column(j).to_pylist()] for j in kept]
    rows = [list(r) for r in zip(*columns)]
    X, labels, names, label_name, notes, categories, inputs = encode_cells(
        [header[j] for j in kept], rows, list(range(len(rows))), src, label_column, no_label=no_label,
        unit="row", **options)
    if index:
        notes.insert(0, f"{src}: column(s) {', '.join(header[j] for j in index)} hold the index pandas stored: dropped")
    return X, labels, names, label_name, notes, categories, inputs
