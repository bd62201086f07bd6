"""GRID.toml of `mpinn search`: `mpinn train` option names with the values to try, checked as
`mpinn train` checks them, and spelled as the estimators' parameters (cli/search.py runs it).

A list is the values to try, a plain value is fixed (`hidden` takes lists of layer sizes:
`hidden = [[10], [50], [100, 50]]`; `hidden = [64, 32]` is one fixed two-layer value), and with
--n-iter a table draws from a distribution (`lr = {loguniform = [1e-4, 1e-1]}`, `uniform`,
`randint` with both ends included).
"""

from __future__ import annotations

import os
import sys

from mpinn.errors import InputError

# Grid keys: the `mpinn train` options that are estimator parameters, and three data options.
FIXED_ONLY = ("task", "x_name", "y_name")
DISTRIBUTIONS = ("uniform", "loguniform", "randint")


def option_names():
    """{TrainConfig field: estimator parameter} of the searchable options (scale: the scaler
    step in front of the MLP)."""
    from mpinn.train.config import ESTIMATOR_FIELDS

    names = {field: f"mlp__{param}" for param, field, way in ESTIMATOR_FIELDS if way != "fit"}
    names["scale"] = "scale"
    return names


def parse_grid(path, randomized):
    """GRID.toml -> (fixed {field: value}, varied {field: [values] or distribution spec}) as
    JSON-able values, every value checked by `mpinn train`'s rules; InputError names the key."""
    if not os.path.isfile(path):
        raise InputError(f"--grid: file not found: {path}")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"--grid: {path} is not valid TOML ({exc})") from None
    names = option_names()
    fixed, varied = {}, {}
    for key, value in raw.items():
        field = key.replace("-", "_")
        where = f"--grid {path}"
        if field not in names and field not in FIXED_ONLY:
            raise InputError(f"{where}: {key}: not a searchable `mpinn train` option (choose from "
                             f"{', '.join(sorted(k.replace('_', '-') for k in (*names, *FIXED_ONLY)))})")
        if isinstance(value, dict):
            if not randomized:
                raise InputError(f"{where}: {key}: a distribution needs --n-iter (randomized search)")
            varied[field] = _distribution(f"{where}: {key}", field, value)
        elif _is_value_list(field, value):
            if not value:
                raise InputError(f"{where}: {key}: empty list of values")
            if field in FIXED_ONLY:
                raise InputError(f"{where}: {key}: give one value, not a list")
            varied[field] = [_checked(where, field, v) for v in value]
        else:
            fixed[field] = _checked(where, field, value)
    if not varied:
        raise InputError(f"--grid {path}: no option has a list of values to try")
    return fixed, varied


def _is_value_list(field, value):
    if not isinstance(value, list):
        return False
    if field == "hidden":  # [64, 32] is one value; [[64], [64, 32]] or ["64", "64,32"] are several
        return not value or any(isinstance(v, (list, str)) for v in value)
    return True


def _checked(where, field, value):
    """One value, as `mpinn train` would take it (JSON-able: hidden as a list)."""
    from mpinn.train.config import TrainConfig

    if field == "shuffle" and value == "local":
        raise InputError(f"{where}: shuffle 'local' is not available in a search (use global or none)")
    try:
        cfg = TrainConfig.from_dict({field: value})
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    out = getattr(cfg, field)
    return list(out) if isinstance(out, tuple) else out


def _distribution(where, field, spec):
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise InputError(f"{where}: a distribution is one of {{uniform = [a, b]}}, {{loguniform = [a, b]}}, "
                         f"{{randint = [a, b]}}; got {spec!r}")
    kind, bounds = next(iter(spec.items()))
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)
            and bounds[0] < bounds[1]):
        raise InputError(f"{where}: {kind} needs two numbers [low, high] with low < high, got {bounds!r}")
    if kind == "randint" and not all(isinstance(b, int) for b in bounds):
        raise InputError(f"{where}: randint needs integer bounds, got {bounds!r}")
    for b in bounds:  # the values it draws: floats, or integers for randint
        _checked(where, field, b if kind == "randint" else float(b))
    return {kind: bounds}


def estimator_values(field, values):
    """Grid values under the pipeline parameter's name and in the estimator's spelling."""
    from scipy import stats

    from mpinn.train.config import estimator_params_from_config

    param = option_names()[field]
    if isinstance(values, dict):
        kind, (a, b) = next(iter(values.items()))
        return param, {"uniform": lambda: stats.uniform(a, b - a), "loguniform": lambda: stats.loguniform(a, b),
                       "randint": lambda: stats.randint(a, b + 1)}[kind]()
    if field == "scale":
        return param, [scaler_step(v) for v in values]
    return param, [estimator_params_from_config({field: v})[param[len("mlp__"):]] for v in values]


def scaler_step(kind):
    """`--scale`'s step: mpinn's scalers (statistics reduced over the task's group) or none."""
    import mpinn

    return {"standard": mpinn.StandardScaler, "minmax": mpinn.MinMaxScaler}[kind]() if kind != "none" \
        else "passthrough"


def train_value(field, values, chosen):
    """The `mpinn train` value of ``field`` for the estimator value ``chosen`` of a candidate."""
    if isinstance(values, dict):  # sampled from a distribution: a number
        return int(chosen) if isinstance(values, dict) and "randint" in values else float(chosen)
    spelled = estimator_values(field, values)[1]
    return values[[repr(v) for v in spelled].index(repr(chosen))]
