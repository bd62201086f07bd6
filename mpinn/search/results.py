"""From task records to scikit-learn's ``cv_results_``, and the results file of `mpinn search`.
No MPI.

Aggregation as BaseSearchCV._format_results: per candidate the mean and the (population) std
over folds, ranks by ``scipy.stats.rankdata(-mean, method="min")`` with failed (NaN) means tied
with the worst, parameter columns as masked arrays. Everything is a function of the records
alone, so the same records give the same ``cv_results_`` whichever ranks produced them.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter, defaultdict

import numpy as np


def scorer_names(records):
    """The score names of the first successful record ({"score"} for a single metric)."""
    for record in records:
        if record["test"] is not None:
            return list(record["test"])
    return None


def fit_failures(records, error_score):
    """sklearn's rule: all fits failed -> ValueError; some -> FitFailedWarning with the tracebacks."""
    from sklearn.exceptions import FitFailedWarning

    errors = [r["error"] for r in records if r["error"] is not None]
    if not errors:
        return
    summary = "\n".join(f"{'-' * 80}\n{n} fits failed with the following error:\n{error}"
                        for error, n in Counter(errors).items())
    if len(errors) == len(records):
        raise ValueError(f"\nAll the {len(records)} fits failed.\nIt is very likely that your model is misconfigured.\n"
                         "You can try to debug the error by setting error_score='raise'.\n\n"
                         f"Below are more details about the failures:\n{summary}")
    warnings.warn(f"\n{len(errors)} fits failed out of a total of {len(records)}.\nThe score on these train-test "
                  f"partitions for these parameters will be set to {error_score}.\nIf these failures are not "
                  "expected, you can try to debug them by setting error_score='raise'.\n\n"
                  f"Below are more details about the failures:\n{summary}", FitFailedWarning)


def format_results(candidates, n_splits, records, error_score, return_train_score):
    """``cv_results_`` from the records of all tasks, task t = candidate t // n_splits, split
    t % n_splits (sklearn's order). A candidate with a failed fit also gets "fit_error" (the last
    line of the first failing split's traceback); the key exists only when some fit failed."""
    from numpy.ma import MaskedArray
    from scipy.stats import rankdata

    n = len(candidates)
    names = scorer_names(records)
    results = {}

    def store(key, values, splits=False, rank=False):
        array = np.array(values, dtype=np.float64).reshape(n, n_splits)
        if splits:
            for k in range(n_splits):
                results[f"split{k}_{key}"] = array[:, k]
        means = np.average(array, axis=1)
        results[f"mean_{key}"] = means
        if key.startswith(("train_", "test_")) and np.any(~np.isfinite(means)):
            warnings.warn(f"One or more of the {key.split('_')[0]} scores are non-finite: {means}", UserWarning)
        results[f"std_{key}"] = np.sqrt(np.average((array - means[:, np.newaxis]) ** 2, axis=1))
        if rank:
            if np.isnan(means).all():
                ranks = np.ones_like(means, dtype=np.int32)
            else:
                filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
                ranks = rankdata(-filled, method="min").astype(np.int32, copy=False)
            results[f"rank_{key}"] = ranks

    store("fit_time", [r["fit_time"] for r in records])
    store("score_time", [r["score_time"] for r in records])
    for key, column in _param_columns(candidates, MaskedArray):
        results[key] = column
    results["params"] = candidates
    for name in names:
        store(f"test_{name}", [_value(r["test"], name, error_score) for r in records], splits=True, rank=True)
        if return_train_score:
            store(f"train_{name}", [_value(r["train"], name, error_score) for r in records], splits=True)
    failed = [r["error"] for r in records]
    if any(e is not None for e in failed):
        from mpinn.search.tasks import last_line

        column = np.empty(n, dtype=object)
        for c in range(n):
            first = next(((k, e) for k, e in enumerate(failed[c * n_splits:(c + 1) * n_splits]) if e), None)
            column[c] = None if first is None else f"split {first[0]}: {last_line(first[1])}"
        results["fit_error"] = column
    return results


def _value(scores, name, error_score):
    return float(error_score) if scores is None else scores[name]


def _param_columns(candidates, MaskedArray):
    """("param_<name>", masked array) as sklearn's _yield_masked_array_for_each_param."""
    by_param = defaultdict(dict)
    for c, params in enumerate(candidates):
        for name, value in params.items():
            by_param[f"param_{name}"][c] = value
    for key, values in by_param.items():
        try:
            arr = np.array(list(values.values()))
        except ValueError:
            dtype = np.dtype(object)
        else:
            dtype = arr.dtype if arr.dtype.kind != "U" and arr.ndim == 1 else object
        column = MaskedArray(np.empty(len(candidates), dtype=dtype), mask=True)
        for c, value in values.items():
            column[c] = value
        yield key, column


# ---- `mpinn search`'s outputs ------------------------------------------------------------------


def rows(results, display_names, plain=None):
    """One dict per candidate, best first: rank, mean/std per metric, the split scores, times,
    the parameters under `mpinn train`'s option names, and the error if a fit failed."""
    metrics = [k[len("mean_test_"):] for k in results if k.startswith("mean_test_")]
    first = metrics[0]
    order = sorted(range(len(results["params"])), key=lambda c: (results[f"rank_test_{first}"][c], c))
    out = []
    for c in order:
        row = {"rank": int(results[f"rank_test_{first}"][c]), "candidate": c}
        for key in ("iter", "n_resources"):  # successive halving's iteration and its resource
            if key in results:
                row[key] = int(results[key][c])
        for m in metrics:
            row[f"mean_test_{m}"] = float(results[f"mean_test_{m}"][c])
            row[f"std_test_{m}"] = float(results[f"std_test_{m}"][c])
        for key in results:
            if key.startswith("split") and "_test_" in key:
                row[key] = float(results[key][c])
        row["mean_fit_time"] = float(results["mean_fit_time"][c])
        for name, value in results["params"][c].items():
            row[display_names.get(name, name)] = _plain(plain(value) if plain else value)
        row["error"] = results["fit_error"][c] if "fit_error" in results else None
        out.append(row)
    return out


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_rows(path, table):
    """JSON lines, or CSV when the name ends in .csv (lists as 64,32, as `--hidden` takes them)."""
    columns = list(dict.fromkeys(k for row in table for k in row))
    with open(path, "w", newline="") as fh:
        if path.lower().endswith(".csv"):
            writer = csv.writer(fh)
            writer.writerow(columns)
            for row in table:
                writer.writerow([_csv_cell(row.get(k)) for k in columns])
        else:
            for row in table:
                fh.write(json.dumps(row) + "\n")


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return value


def _cell(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(_csv_cell(value))


def table_lines(table, metric, limit=20):
    """The ranked table `mpinn search` prints: rank, mean and std of the metric that picks the
    best, the parameters (and the error column when a fit failed). No times: the same search
    prints the same table."""
    skip = {"rank", "candidate", "mean_fit_time", "error"}
    params = [k for k in dict.fromkeys(k for row in table for k in row)
              if k not in skip and not k.startswith(("mean_test_", "std_test_", "split"))]
    failed = any(row["error"] for row in table)
    head = ["rank", f"mean_test_{metric}", "std", *params] + (["error"] if failed else [])
    body = []
    for row in table[:limit]:
        cells = [str(row["rank"]), f"{row[f'mean_test_{metric}']:.6g}", f"{row[f'std_test_{metric}']:.3g}"]
        cells += [_cell(row.get(p)) for p in params]
        if failed:
            cells.append((row["error"] or "")[:70])
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *body]]
    if len(table) > limit:
        lines.append(f"... {len(table) - limit} more in the results file")
    return lines
