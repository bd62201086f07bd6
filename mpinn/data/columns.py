"""Feature columns by name: the one-hot encoding of categorical columns, and matching a file's or
a table's columns to a model's. Serial, no MPI.

A data file written by `mpinn data convert` names its features (``feature_names``); with
categorical columns it also stores an ``encoding``: the table's own columns in order, each
categorical column's categories, and what an unseen category does. A categorical column ``c``
with categories [a, b] becomes the features ``c=a``, ``c=b`` in its place. The model keeps
both, so a file converted on its own (other categories, other column order) or a raw
DataFrame is fed to it in the order and encoding it was trained with.
"""

from __future__ import annotations

import numpy as np

from mpinn.errors import InputError

UNKNOWN_CATEGORY = ("error", "zeros")


def indicator(column, category):
    """The feature name of one category of a categorical column."""
    return f"{column}={category}"


def check_unknown(policy):
    if policy not in UNKNOWN_CATEGORY:
        raise InputError(f"unknown-category must be one of {', '.join(UNKNOWN_CATEGORY)}, got {policy!r}")
    return policy


def make_encoding(columns, categories, unknown="error"):
    """The ``encoding`` a data file and a model store: {"input_columns", "categories", "unknown_category"}."""
    return {"input_columns": list(columns), "categories": {c: list(v) for c, v in categories.items()},
            "unknown_category": check_unknown(unknown)}


def encoded_names(columns, categories):
    """Feature names after encoding: each categorical column replaced by its indicators, in place."""
    out = []
    for c in columns:
        out += [indicator(c, v) for v in categories[c]] if c in categories else [c]
    return out


def _indicators(encoding):
    """{feature name: (column, category)} of the encoding's indicator features."""
    cats = (encoding or {}).get("categories", {})
    return {indicator(c, v): (c, v) for c, vs in cats.items() for v in vs}


def _differ(want, have, what):
    """The one error for names that differ: which are missing, which unexpected (five of each)."""
    def listed(label, names):
        return [f"{label} {', '.join(map(repr, names[:5]))}{' ...' if len(names) > 5 else ''}"] if names else []

    parts = listed("missing", [n for n in want if n not in have]) + listed("unexpected", [n for n in have if n not in want])
    if not parts:  # the same names, one of them twice
        parts = ["a column name repeats"]
    return InputError(f"{what}: feature names differ from the model's ({'; '.join(parts)})")


class ColumnPlan:
    """How the columns of a file (names ``have``) become the model's features (names ``want``):
    ``source[j]`` is the file column of model feature j, or -1 for a category the file never saw
    (zeros); ``unseen`` are file columns holding categories the model never saw."""

    def __init__(self, source, unseen, n_have, policy):
        self.source = np.asarray(source, dtype=np.int64)
        self.unseen = np.asarray(unseen, dtype=np.int64)
        self.n_have, self.policy = n_have, policy
        self.identity = len(self.unseen) == 0 and len(self.source) == n_have \
            and (self.source == np.arange(n_have)).all()

    def unseen_problem(self, X, names, what, first_row=0):
        """A message when a row of X (file columns) holds an unseen category and the policy is
        'error'; None otherwise."""
        if self.policy != "error" or not len(self.unseen) or not len(X):
            return None
        hit = np.asarray(X)[:, self.unseen] != 0
        if not hit.any():
            return None
        i, k = (int(v) for v in np.argwhere(hit)[0])
        col, cat = names[int(self.unseen[k])].split("=", 1)
        return (f"{what}: row {first_row + i} has category {cat!r} in column {col!r}, which the model never saw "
                "(convert the training data with --unknown-category zeros to encode it as all zeros)")

    def apply(self, X, dtype=None):
        """The model's features from rows of the file's columns."""
        X = np.asarray(X)
        if self.identity:
            return X if dtype is None else np.asarray(X, dtype=dtype)
        out = np.zeros((len(X), len(self.source)), dtype=dtype or X.dtype)
        have = self.source >= 0
        out[:, have] = X[:, self.source[have]]
        return out


def plan_columns(want, want_encoding, have, have_encoding, what, policy=None):
    """A ColumnPlan from the file's feature names to the model's, or None when either side has
    no names (then columns are taken by position, as always). Raises InputError naming the
    differences when the names differ beyond categories of the same categorical columns."""
    if not want or not have:
        return None
    policy = policy or (want_encoding or {}).get("unknown_category", "error")
    want_ind, have_ind = _indicators(want_encoding), _indicators(have_encoding)
    position = {n: i for i, n in enumerate(have)}
    want_cols = {c for c, _ in want_ind.values()}
    source, unseen = [], []
    for name in want:
        if name in position:
            source.append(position[name])
        elif name in want_ind and want_ind[name][0] in {c for c, _ in have_ind.values()}:
            source.append(-1)  # a category of a column the file also encodes, none of its rows has it
        else:
            raise _differ(want, have, what)
    wanted = set(want)
    for i, name in enumerate(have):
        if name in wanted:
            continue
        if name in have_ind and have_ind[name][0] in want_cols:
            unseen.append(i)
        else:
            raise _differ(want, have, what)
    return ColumnPlan(source, unseen, len(have), policy)


# ---------------------------------------------------------------- tables (pandas DataFrames)

def is_table(X):
    """A pandas DataFrame (or anything with named columns and per-column access)."""
    return hasattr(X, "columns") and hasattr(X, "iloc")


def table_columns(X):
    return [str(c) for c in X.columns]


def encode_table(X, input_columns, categories, policy, what="X"):
    """A DataFrame's columns, taken by name in ``input_columns`` order and one-hot encoded with
    ``categories``, as a float64 array. Raises ValueError (InputError) when the names differ,
    or on a category the model never saw under the 'error' policy (all zeros under 'zeros')."""
    names = table_columns(X)
    if sorted(names) != sorted(input_columns) or len(set(names)) != len(names):
        raise _differ(input_columns, names, what)
    position = {n: i for i, n in enumerate(names)}
    parts = []
    for c in input_columns:
        values = X.iloc[:, position[c]].to_numpy()
        if c not in categories:
            try:
                parts.append(np.asarray(values, dtype=np.float64).reshape(-1, 1))
            except (TypeError, ValueError):
                raise InputError(f"{what}: column {c!r} is not numeric (the model was trained on it as a number)") \
                    from None
            continue
        cats = list(categories[c])
        text = np.array([_category_text(v) for v in values], dtype=object)
        onehot = (text[:, None] == np.array(cats, dtype=object)[None, :]).astype(np.float64)
        unknown = ~onehot.any(axis=1)
        if unknown.any() and policy == "error":
            i = int(np.argmax(unknown))
            if text[i] is None:
                raise InputError(f"{what}: row {i} has a missing value in categorical column {c!r}")
            raise InputError(f"{what}: row {i} has category {text[i]!r} in column {c!r}, which the model never saw "
                             "(convert the training data with --unknown-category zeros to encode it as all zeros)")
        parts.append(onehot)
    return np.hstack(parts) if parts else np.zeros((len(X), 0))


def _category_text(value):
    """A cell as the category text convert stores (str of the value; None when missing, which
    matches no category)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value).strip()
