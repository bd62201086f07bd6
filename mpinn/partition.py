"""Which rows of a dataset each rank owns: pure functions of (n_rows, rank, size, strategy).

No MPI here, so every strategy is tested serially for any rank count. A shard is either a
contiguous block (``block``, ``weighted``) or every size-th row (``strided``); both map to
one HDF5 hyperslab, so a rank reads exactly its rows and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

STRATEGIES = ("block", "strided", "weighted")


@dataclass(frozen=True)
class ShardSpec:
    """A parsed ``--shard`` value: strategy name and, for ``weighted``, one weight per rank."""

    strategy: str = "block"
    weights: tuple[float, ...] | None = None

    def __str__(self):
        if self.strategy == "weighted":
            return "weighted:" + ",".join(f"{w:g}" for w in self.weights)
        return self.strategy


def parse_shard(text: str) -> ShardSpec:
    """Parse ``block``, ``strided`` or ``weighted:W0,W1,...``."""
    name, _, rest = str(text).strip().partition(":")
    if name not in STRATEGIES:
        raise InputError(f"--shard: unknown strategy {text!r} (choose block, strided or weighted:W0,W1,...)")
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


def block_offsets(n_rows: int, size: int, weights=None) -> np.ndarray:
    """Start offsets of each rank's block (length size+1).

    Equal shares, or shares proportional to ``weights``, rounded down; the rows left over go
    one each to the lowest ranks so the result depends only on (n_rows, size, weights).
    """
    if weights is None:
        counts = np.full(size, n_rows // size, dtype=np.int64)
    else:
        if len(weights) != size:
            raise InputError(f"--shard: {len(weights)} weights given for {size} ranks")
        w = np.asarray(weights, dtype=np.float64)
        counts = np.floor(n_rows * (w / w.sum())).astype(np.int64)
    leftover = n_rows - int(counts.sum())
    if weights is None:
        counts[:leftover] += 1
    else:
        # Leftovers go to the lowest ranks that have a nonzero weight.
        eligible = np.flatnonzero(np.asarray(weights) > 0)
        for i in range(leftover):
            counts[eligible[i % len(eligible)]] += 1
    return np.concatenate(([0], np.cumsum(counts)))


@dataclass(frozen=True)
class Shard:
    """The rows rank ``rank`` of ``size`` owns: global rows start, start+step, ... < stop."""

    n_rows: int
    rank: int
    size: int
    start: int
    stop: int
    step: int = 1

    @property
    def count(self) -> int:
        return len(range(self.start, self.stop, self.step))

    @property
    def rows(self) -> np.ndarray:
        """Sorted global indices of the owned rows."""
        return np.arange(self.start, self.stop, self.step, dtype=np.int64)

    def as_slice(self) -> slice:
        """The hyperslab to read with h5py: ``dataset[shard.as_slice()]``."""
        return slice(self.start, self.stop, self.step)

    def local_positions(self, global_idx: np.ndarray):
        """For global row indices, which ones this rank owns and where they sit locally.

        Returns (mask, local) where ``local`` holds the local positions of the owned entries,
        in the order they appear in ``global_idx``. O(len(global_idx)), no table of n_rows.
        """
        g = np.asarray(global_idx, dtype=np.int64)
        offset = g - self.start
        mask = (g >= self.start) & (g < self.stop)
        if self.step != 1:
            mask &= offset % self.step == 0
        return mask, offset[mask] // self.step


def make_shard(n_rows: int, rank: int, size: int, spec: ShardSpec | str = "block") -> Shard:
    """The shard of ``rank`` among ``size`` ranks of a dataset with ``n_rows`` rows."""
    if isinstance(spec, str):
        spec = parse_shard(spec)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} out of range for size {size}")
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if spec.strategy == "strided":
        return Shard(n_rows, rank, size, start=min(rank, n_rows), stop=n_rows, step=size)
    offsets = block_offsets(n_rows, size, spec.weights if spec.strategy == "weighted" else None)
    return Shard(n_rows, rank, size, start=int(offsets[rank]), stop=int(offsets[rank + 1]))
