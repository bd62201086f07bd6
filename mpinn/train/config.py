"""Training configuration: one dataclass, validated up front, stored whole in checkpoints.

Defaults are scikit-learn MLPClassifier's. Every check raises InputError with a message that
names the option and the bad value, before any file is read or any collective is called.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass

from mpinn.errors import InputError
from mpinn.nn.activations import HIDDEN_ACTIVATIONS
from mpinn.nn.optim import SCHEDULES, SOLVERS, make_optimizer
from mpinn.options import BALANCES, DTYPES, PERMUTATIONS, SCALES, SHUFFLES, TASKS, parse_shard, parse_sync



@dataclass
class TrainConfig:
    data: str | None = None
    test_data: str | None = None
    test_fraction: float | None = None
    x_name: str = "X"
    y_name: str = "y"
    task: str = "auto"
    scale: str = "standard"   # feature scaling fitted on the training rows (preprocessing/training.py)
    hidden: tuple = (100,)
    activation: str = "relu"
    solver: str = "adam"
    lr: float = 0.001
    lr_schedule: str = "constant"
    power_t: float = 0.5
    momentum: float = 0.9
    nesterov: bool = True
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    batch_size: object = "auto"
    epochs: int = 200
    alpha: float = 1e-4
    tol: float = 1e-4
    n_iter_no_change: int = 10
    early_stopping: bool = False       # hold out validation rows, stop on their score (sklearn's rule)
    validation_fraction: float = 0.1
    loss_target: float | None = None
    dtype: str = "float64"
    seed: int = 0
    shard: str = "block"
    balance: str = "static"
    shuffle: str = "global"
    permutation: str = "auto"
    sync: str = "auto"
    sync_warmup_steps: int = 0
    warmup_epochs: float = 0.0
    batch_per_rank: int | None = None
    stream: bool = False
    checkpoint: str | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    resume: bool = False
    metrics: str | None = None

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def to_toml(self):
        """The resolved configuration as a TOML file `--config` accepts (unset options omitted)."""
        lines = []
        for key, value in self.to_dict().items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def field_names(cls):
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d):
        """A validated config from plain values (TOML, JSON, argparse); unknown keys are refused."""
        unknown = sorted(set(d) - cls.field_names())
        if unknown:
            raise InputError(f"unknown config keys: {', '.join(unknown)}")
        d = {k: _coerce(k, v) for k, v in d.items()}
        return cls(**d).validate()

    def check_streaming(self):
        """Streaming reads each shard front to back in chunks: the batches must follow that order."""
        if self.shuffle == "global":
            raise InputError("--stream: use --shuffle none (the same batches as in memory) or local (chunk order "
                             "and rows within chunks shuffled); global would read the whole shard every batch")
        if self.test_fraction:
            raise InputError("--stream: hold out test rows with --test-data, not --test-fraction")

    def validate(self):
        def bad(option, value, why):
            raise InputError(f"--{option.replace('_', '-')}: {why}, got {value!r}")

        def choose(option, value, choices):
            if value not in choices:
                bad(option, value, "choose from " + ", ".join(choices))

        choose("task", self.task, TASKS)
        choose("scale", self.scale, SCALES)
        choose("activation", self.activation, HIDDEN_ACTIVATIONS)
        choose("solver", self.solver, SOLVERS)
        choose("lr_schedule", self.lr_schedule, SCHEDULES)
        choose("shuffle", self.shuffle, SHUFFLES)
        choose("permutation", self.permutation, PERMUTATIONS)
        choose("balance", self.balance, BALANCES)
        choose("dtype", self.dtype, DTYPES)
        try:
            kind, _ = parse_sync(self.sync)
        except ValueError as exc:
            raise InputError(f"--sync: {exc}") from None
        if not isinstance(self.sync_warmup_steps, int) or self.sync_warmup_steps < 0:
            bad("sync_warmup_steps", self.sync_warmup_steps, "must be an integer >= 0")
        if self.sync_warmup_steps and kind != "local":
            bad("sync_warmup_steps", self.sync_warmup_steps, "only --sync local:K has warm-up steps")
        if not self.warmup_epochs >= 0:
            bad("warmup_epochs", self.warmup_epochs, "must be >= 0")
        if self.batch_per_rank is not None:
            if not isinstance(self.batch_per_rank, int) or isinstance(self.batch_per_rank, bool) or self.batch_per_rank < 1:
                bad("batch_per_rank", self.batch_per_rank, "must be an integer >= 1")
            if self.batch_size != "auto":
                raise InputError("--batch-per-rank and --batch-size are mutually exclusive")
        if not self.hidden or any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in self.hidden):
            bad("hidden", self.hidden, "layer sizes must be integers >= 1")
        for name in ("lr", "epsilon"):
            if not getattr(self, name) > 0:
                bad(name, getattr(self, name), "must be > 0")
        for name in ("alpha", "tol", "power_t"):
            if not getattr(self, name) >= 0:
                bad(name, getattr(self, name), "must be >= 0")
        for name in ("momentum", "beta_1", "beta_2"):
            v = getattr(self, name)
            if not (0 <= v <= 1 if name == "momentum" else 0 <= v < 1):
                bad(name, v, "must be in [0, 1]" if name == "momentum" else "must be in [0, 1)")
        if self.batch_size not in ("auto", "full"):
            if not isinstance(self.batch_size, int) or self.batch_size < 1:
                bad("batch_size", self.batch_size, "must be an integer >= 1, 'auto' or 'full'")
        for name, low in (("epochs", 1), ("n_iter_no_change", 1), ("checkpoint_every", 0), ("keep_checkpoints", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or v < low:
                bad(name, v, f"must be an integer >= {low}")
        if not 0 < self.validation_fraction < 1:
            bad("validation_fraction", self.validation_fraction, "must be in (0, 1)")
        if self.early_stopping and self.stream:
            raise InputError("--early-stopping holds validation rows in memory; it does not combine with --stream")
        if self.test_fraction is not None and not 0 < self.test_fraction < 1:
            bad("test_fraction", self.test_fraction, "must be in (0, 1)")
        if self.test_fraction is not None and self.test_data:
            raise InputError("--test-data and --test-fraction are mutually exclusive")
        if self.checkpoint_every and not self.checkpoint:
            raise InputError("--checkpoint-every needs --checkpoint DIR")
        if self.resume and not self.checkpoint:
            raise InputError("--resume needs --checkpoint DIR (the directory to resume from)")
        parse_shard(self.shard)
        if self.stream:
            self.check_streaming()
        return self


# Options a resumed run may change; every other one must equal the checkpoint's.
RESUME_MAY_CHANGE = {"data", "test_data", "epochs", "tol", "n_iter_no_change", "loss_target", "shard", "sync",
                     "balance", "sync_warmup_steps", "checkpoint", "checkpoint_every", "keep_checkpoints", "resume", "metrics"}


def resume_conflicts(saved: dict, current: "TrainConfig"):
    """Names of options whose value differs from the checkpoint's and may not."""
    now = current.to_dict()
    return sorted(k for k in now if k not in RESUME_MAY_CHANGE and k in saved and saved[k] != now[k])


# ---- scikit-learn parameter names <-> TrainConfig fields --------------------------------------

# (estimator parameter, TrainConfig field, the way(s) it is carried): the same setting under
# scikit-learn's name and the CLI's. "both": fit puts it in its TrainConfig and mpinn.load sets
# it from a CLI run's. Only when fitting ("fit"): sync and the checkpoint options (a loaded CLI
# run keeps the estimator defaults). Only when loading ("load"): the seed (a fit hands its
# RandomState to the Trainer) and the dtype (a fit takes it from the data).
ESTIMATOR_FIELDS = (
    ("hidden_layer_sizes", "hidden", "both"),
    ("activation", "activation", "both"),
    ("solver", "solver", "both"),
    ("alpha", "alpha", "both"),
    ("batch_size", "batch_size", "both"),
    ("learning_rate", "lr_schedule", "both"),
    ("learning_rate_init", "lr", "both"),
    ("power_t", "power_t", "both"),
    ("max_iter", "epochs", "both"),
    ("shuffle", "shuffle", "both"),
    ("random_state", "seed", "load"),
    ("tol", "tol", "both"),
    ("momentum", "momentum", "both"),
    ("nesterovs_momentum", "nesterov", "both"),
    ("beta_1", "beta_1", "both"),
    ("beta_2", "beta_2", "both"),
    ("epsilon", "epsilon", "both"),
    ("n_iter_no_change", "n_iter_no_change", "both"),
    ("early_stopping", "early_stopping", "both"),
    ("validation_fraction", "validation_fraction", "both"),
    ("dtype", "dtype", "load"),
    ("shard", "shard", "both"),
    ("sync", "sync", "both"),
    ("checkpoint", "checkpoint", "fit"),
    ("checkpoint_every", "checkpoint_every", "fit"),
    ("keep_checkpoints", "keep_checkpoints", "fit"),
)
# Values spelled differently on the two sides (anything else is carried as it is).
_TO_FIELD = {
    "hidden": lambda v: tuple(v) if hasattr(v, "__iter__") else (v,),
    "shuffle": lambda v: "global" if v else "none",
    "shard": str,
    "checkpoint": lambda v: None if v is None else os.fspath(v),
}
_TO_PARAM = {
    "hidden_layer_sizes": tuple,
    "shuffle": lambda v: v != "none",  # "global" and "local" both shuffle
}


def config_from_estimator(est, **overrides):
    """The TrainConfig an estimator's fit trains with: its parameters under the CLI's names
    ("both" and "fit" rows of ESTIMATOR_FIELDS), then ``overrides`` (fields a fit resolves
    from the data: hidden, batch_size, dtype, epochs of partial_fit). Not validated."""
    values = {field: _TO_FIELD.get(field, _same)(getattr(est, param))
              for param, field, way in ESTIMATOR_FIELDS if way != "load" and field not in overrides}
    return TrainConfig(**{"scale": "none", **values, **overrides})  # an estimator gets X as given


def estimator_params_from_config(cfg):
    """Estimator parameters for a `mpinn train` run's configuration (a TrainConfig.to_dict());
    fields an older checkpoint lacks are left at the estimator's default."""
    return {param: _TO_PARAM.get(param, _same)(cfg[field]) for param, field, way in ESTIMATOR_FIELDS
            if way != "fit" and field in cfg}


def optimizer_from_config(cfg, n_params, dtype):
    """The optimizer (optim.make_optimizer) for ``cfg``'s solver and its hyperparameters."""
    return make_optimizer(cfg.solver, n_params, dtype, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          schedule=cfg.lr_schedule, power_t=cfg.power_t, beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                          epsilon=cfg.epsilon)


def _same(v):
    return v


# Options of `mpinn train` that are not part of the model's configuration.
# --mlflow: true, or a run name (tracking.py); not in TrainConfig, so not in checkpoints.
CLI_ONLY = {"json": bool, "quiet": bool, "verbose": bool, "log_every": int, "progress": str, "mlflow": (bool, str),
            "elastic": bool, "min_ranks": int}
_FLOATS = {"validation_fraction", "warmup_epochs", "test_fraction", "lr", "power_t", "momentum", "beta_1", "beta_2", "epsilon", "alpha", "tol", "loss_target"}
_INTS = {"sync_warmup_steps", "batch_per_rank", "epochs", "n_iter_no_change", "seed", "checkpoint_every", "keep_checkpoints"}
_BOOLS = {"early_stopping", "nesterov", "resume", "stream"}


def _coerce(key, value):
    """Check one value's type, as it came from TOML or the command line."""
    if value is None:
        return None
    if key == "hidden":
        if isinstance(value, str):
            return parse_hidden(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,)
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise InputError(f"hidden: expected a list of integers like [64, 32], got {value!r}")
    if key == "batch_size":
        return parse_batch_size(value) if isinstance(value, str) else _checked(key, value, int)
    if key in _FLOATS:
        return float(_checked(key, value, (int, float)))
    if key in _INTS:
        return _checked(key, value, int)
    if key in _BOOLS:
        return _checked(key, value, bool)
    return _checked(key, value, str)


def _checked(key, value, types):
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise InputError(f"{key}: expected {names}, got {value!r}")
    return value


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


def load_toml(path):
    """Options from a TOML file: long option names as keys (`batch-size` or `batch_size`)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"--config: file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"--config: {path} is not valid TOML ({exc})") from None
    values = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            raise InputError(f"--config: {path}: tables are not supported, put [{key}]'s keys at top level")
        values[key.replace("-", "_")] = value
    allowed = TrainConfig.field_names() | set(CLI_ONLY)
    unknown = sorted(k for k in values if k not in allowed)
    if unknown:
        raise InputError(f"--config: {path}: unknown keys: {', '.join(unknown)}")
    for key, kind in CLI_ONLY.items():
        if key in values:
            _checked(key, values[key], kind)
    return values


def parse_hidden(text):
    """'100' or '64,32' -> (64, 32)."""
    try:
        sizes = tuple(int(s) for s in str(text).split(","))
    except ValueError:
        raise InputError(f"--hidden: expected comma-separated integers like 64,32, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise InputError(f"--hidden: layer sizes must be >= 1, got {text!r}")
    return sizes


def parse_batch_size(text):
    if text in ("auto", "full"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"--batch-size: expected an integer, 'auto' or 'full', got {text!r}") from None
    if value < 1:
        raise InputError(f"--batch-size: must be >= 1, got {text!r}")
    return value
