"""Every option's vocabulary and its pure parser: what a value may be, not what it does.

The modules that give the options their behaviour (partition, sync, balance, schedule, the
scalers, config) import these names from here, so a vocabulary never pulls in behaviour and
config sits above the strategies instead of beside them. Only errors.py below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpinn.errors import InputError

TASKS = ("auto", "classify", "regress")
SHUFFLES = ("global", "local", "none")
DTYPES = ("float32", "float64")
SCALES = ("standard", "minmax", "none")
PERMUTATIONS = ("auto", "sklearn", "keyed")
BALANCES = ("static", "dynamic")
STRATEGIES = ("block", "strided", "weighted", "random")
SYNCS = ("auto", "allreduce", "sharded", "shm")


def parse_sync(name):
    """(strategy, K) of a --sync value: K is local:K's period, None for the others. ValueError
    with a one-line message for anything else."""
    if isinstance(name, str) and name.startswith("local:"):
        k = name[len("local:"):]
        if not (k.isdigit() and int(k) >= 1):
            raise ValueError(f"local:K averages the models every K steps: K must be an integer >= 1, got {name!r}")
        return "local", int(k)
    if name not in SYNCS:
        raise ValueError(f"choose from {', '.join(SYNCS)} or local:K, got {name!r}")
    return name, None


def parse_balance(text) -> str:
    if text not in BALANCES:
        raise InputError(f"--balance: choose from {', '.join(BALANCES)}, got {text!r}")
    return text


@dataclass(frozen=True)
class ShardSpec:
    """A parsed ``--shard`` value: strategy name, ``weighted``'s weights, ``random``'s chunk rows."""

    strategy: str = "block"
    weights: tuple[float, ...] | None = None
    chunk: int | None = None

    def __str__(self):
        if self.strategy == "weighted":
            return "weighted:" + ",".join(f"{w:g}" for w in self.weights)
        if self.strategy == "random" and self.chunk:
            return f"random:{self.chunk}"
        return self.strategy


def parse_shard(text: str) -> ShardSpec:
    """Parse ``block``, ``strided``, ``random[:CHUNK_ROWS]`` or ``weighted:W0,W1,...``."""
    name, _, rest = str(text).strip().partition(":")
    if name not in STRATEGIES:
        raise InputError(f"--shard: unknown strategy {text!r} (choose block, strided, random[:CHUNK_ROWS] "
                         "or weighted:W0,W1,...)")
    if name == "random":
        if not rest:
            return ShardSpec("random")
        try:
            chunk = int(rest)
        except ValueError:
            chunk = 0
        if chunk < 1:
            raise InputError(f"--shard: random's chunk size must be an integer number of rows >= 1, got {rest!r}")
        return ShardSpec("random", chunk=chunk)
    if name != "weighted":
        if rest:
            raise InputError(f"--shard: {name} takes no weights, got {text!r}")
        return ShardSpec(name)
    try:
        weights = tuple(float(w) for w in rest.split(","))
    except ValueError:
        raise InputError(f"--shard: weights must be numbers, got {rest!r}") from None
    if not rest or any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"--shard: weights must be finite, >= 0 and not all 0, got {rest!r}")
    return ShardSpec("weighted", weights)
