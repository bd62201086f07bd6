"""Which rows of a dataset each rank owns: pure functions of (n_rows, rank, size, strategy).

No MPI here, so every strategy is tested serially for any rank count. A shard is a set of
runs of consecutive rows, repeated every ``period`` rows when the pattern is cyclic:

  block, weighted   one run                                   (one hyperslab)
  random            the runs of the fixed-size row chunks a seeded permutation gave this
                    rank, balanced to within one chunk         (one hyperslab per run)
  strided           row r of every N: one run (r, r+1) of period N (one strided hyperslab)

``shares`` (dynamic load balancing, parallel/balance.py) replace the equal or static shares:
block cuts its offsets, random deals out its permuted chunks, and strided becomes
block-cyclic: each round of G * N rows (G = STRIDED_GROUP, fewer on small data) is cut in
proportion to the shares.
A shard keeps its rows in global order: local position i holds global row ``rows[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpinn.errors import InputError
from mpinn.options import ShardSpec, parse_shard

# Chunks per rank aimed at by `random` without a chunk size; the cap keeps a chunk a few MB.
RANDOM_CHUNKS_PER_RANK = 16
RANDOM_MAX_CHUNK = 1 << 16
# Rows per rank in one round of a strided shard with shares (the shares' resolution).
STRIDED_GROUP = 64


def even_bounds(n: int, size: int, lo: int = 0) -> list[int]:
    """Bounds of ``size`` contiguous parts of [lo, lo + n) whose sizes differ by at most one
    (part r is [b[r], b[r+1])): a parameter vector's slices, a prediction round's rows. Shards use
    block_offsets, whose leftover rows go to the lowest ranks (kept: it defines saved shards)."""
    return [lo + n * r // size for r in range(size + 1)]


# Fixed chunks for sums whose bits do not depend on N (parallel/tree_sum.py): at least this many
# rows in a chunk, at most this many chunks; the chunking is a function of the row count alone.
# Below 2 x MIN_CHUNK_ROWS rows there is one chunk: one matmul over all rows, as scikit-learn
# computes it, so a small problem's L-BFGS run is scikit-learn's (the line search amplifies any
# other rounding into another model) and such a sum takes microseconds on one rank anyway.
MIN_CHUNK_ROWS = 4096
MAX_CHUNKS = 1024


def tree_chunking(n_rows: int) -> tuple[int, int]:
    """(C, rows per chunk): C a power of two, chunks of at least MIN_CHUNK_ROWS rows (the last
    may be shorter), chosen from ``n_rows`` alone."""
    chunks = 1
    while 2 * chunks <= min(MAX_CHUNKS, n_rows // MIN_CHUNK_ROWS):
        chunks *= 2
    return chunks, max(1, -(-n_rows // chunks))


def chunk_shard(n_rows: int, rank: int, size: int) -> "Shard":
    """Block shard cut at chunk boundaries: rank r holds whole chunks even_bounds(C, size)[r:r+2]."""
    chunks, rows = tree_chunking(n_rows)
    bounds = even_bounds(chunks, size)
    lo, hi = min(bounds[rank] * rows, n_rows), min(bounds[rank + 1] * rows, n_rows)
    return Shard(n_rows, rank, size, runs=((lo, hi),))


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


def share_offsets(total: int, shares) -> np.ndarray:
    """Offsets (length size+1) cutting ``total`` units in proportion to ``shares``, rounded to
    the nearest: floors first, then one more unit to the largest remainders (lowest rank
    first among equals), so every count is within one unit of its exact share."""
    w = np.asarray(shares, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    extra = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:extra]] += 1
    return np.concatenate(([0], np.cumsum(counts)))


@dataclass(frozen=True)
class Shard:
    """The rows rank ``rank`` of ``size`` owns: global rows g < n_rows whose offset in their
    period, g mod ``period``, lies in one of ``runs`` (sorted, disjoint ``(start, stop)``).
    ``period`` 0 means no repetition: the runs are global row ranges."""

    n_rows: int
    rank: int
    size: int
    runs: tuple = ()
    period: int = 0

    def __post_init__(self):
        object.__setattr__(self, "_starts", np.array([a for a, _ in self.runs], dtype=np.int64))
        object.__setattr__(self, "_stops", np.array([b for _, b in self.runs], dtype=np.int64))
        lengths = self._stops - self._starts
        object.__setattr__(self, "_before", np.concatenate(([0], np.cumsum(lengths))).astype(np.int64))

    @property
    def per_period(self) -> int:
        return int(self._before[-1])

    @property
    def count(self) -> int:
        if not self.period:
            return self.per_period
        full, rem = divmod(self.n_rows, self.period)
        return full * self.per_period + int(np.clip(rem - self._starts, 0, self._stops - self._starts).sum())

    @property
    def rows(self) -> np.ndarray:
        """Sorted global indices of the owned rows."""
        out = np.empty(self.count, dtype=np.int64)
        for src, dst in self.pieces():
            out[dst] = np.arange(src.start, src.stop, src.step, dtype=np.int64)
        return out

    def local_positions(self, global_idx: np.ndarray):
        """For global row indices, which ones this rank owns and where they sit locally.

        Returns (mask, local) where ``local`` holds the local positions of the owned entries,
        in the order they appear in ``global_idx``. O(len(global_idx) log runs), no table of n_rows.
        """
        g = np.asarray(global_idx, dtype=np.int64)
        if not self.runs:
            return np.zeros(g.shape, dtype=bool), np.zeros(0, dtype=np.int64)
        if self.period:
            q, s = np.divmod(g, self.period)
        else:
            q, s = 0, g
        i = np.searchsorted(self._starts, s, side="right") - 1
        ic = np.maximum(i, 0)
        mask = (i >= 0) & (s < self._stops[ic]) & (g >= 0) & (g < self.n_rows)
        local = (self._before[ic] + s - self._starts[ic])[mask]
        if self.period:
            local += q[mask] * self.per_period
        return mask, local

    def global_rows(self, local) -> np.ndarray:
        """The global row of each local position (the inverse of local_positions)."""
        pos = np.asarray(local, dtype=np.int64)
        q, o = np.divmod(pos, self.per_period) if self.period else (0, pos)
        i = np.searchsorted(self._before, o, side="right") - 1
        return q * self.period + self._starts[i] + o - self._before[i]

    def pieces(self, lo: int = 0, hi: int | None = None):
        """The hyperslabs that hold local rows [lo, hi): a list of (global slice, slice of
        [lo, hi)). Runs give one contiguous slice each; a cyclic shard gives one strided slice
        per row of its run (rows j, j + run, j + 2 run, ... of the range)."""
        hi = self.count if hi is None else hi
        out = []
        if hi <= lo:
            return out
        if not self.period:
            for a, b, before in zip(self._starts, self._stops, self._before):
                l0, l1 = max(lo, before), min(hi, before + b - a)
                if l0 < l1:
                    g0 = int(a + l0 - before)
                    out.append((slice(g0, g0 + l1 - l0, 1), slice(l0 - lo, l1 - lo, 1)))
            return out
        k, period = self.per_period, self.period
        for o in range(k):  # local positions with l mod k == o share one strided hyperslab
            l0 = lo + (o - lo) % k
            n = len(range(l0, hi, k))
            if n == 0:
                continue
            i = int(np.searchsorted(self._before, o, side="right") - 1)
            g0 = (l0 // k) * period + int(self._starts[i]) + o - int(self._before[i])
            out.append((slice(g0, g0 + (n - 1) * period + 1, period), slice(l0 - lo, l0 - lo + (n - 1) * k + 1, k)))
        return out

    def take(self, array):
        """This shard's rows of an in-memory array of all rows (a view when one slice does)."""
        pieces = self.pieces()
        if len(pieces) == 1:
            return array[pieces[0][0]]
        out = np.empty((self.count,) + tuple(np.shape(array)[1:]), dtype=np.asarray(array[:0]).dtype)
        for src, dst in pieces:
            out[dst] = array[src]
        return out

    # One regular hyperslab (block, weighted, plain strided): what as_slice() returns.
    @property
    def start(self) -> int:
        return self.as_slice().start

    @property
    def stop(self) -> int:
        return self.as_slice().stop

    @property
    def step(self) -> int:
        return self.as_slice().step

    def as_slice(self) -> slice:
        """The one hyperslab to read with h5py, ``dataset[shard.as_slice()]``, when there is one."""
        if len(self.runs) == 1:
            a, b = self.runs[0]
            if not self.period:
                return slice(a, b, 1)
            if b - a == 1:
                return slice(min(a, self.n_rows), self.n_rows, self.period)
        if not self.runs:
            return slice(0, 0, 1)
        raise ValueError(f"rank {self.rank}'s shard is {len(self.pieces())} hyperslabs, not one: use pieces()")


def random_chunk_rows(n_rows: int, size: int, spec: ShardSpec) -> int:
    """The chunk size of a random shard: the spec's, or about RANDOM_CHUNKS_PER_RANK per rank."""
    if spec.chunk:
        return spec.chunk
    return int(min(RANDOM_MAX_CHUNK, max(1, n_rows // (RANDOM_CHUNKS_PER_RANK * size))))


def check_random_chunk(n_rows: int, size: int, spec: ShardSpec):
    """A chunk size that leaves some rank without a chunk is refused (InputError)."""
    chunk = random_chunk_rows(n_rows, size, spec)
    n_chunks = -(-n_rows // chunk)
    if n_chunks < size:
        raise InputError(f"--shard random:{chunk}: {n_rows} rows make {n_chunks} chunk(s) of {chunk} rows, fewer "
                         f"than the {size} ranks; use a chunk of at most {max(1, n_rows // size)} rows")


def _merge(chunks, chunk, n_rows):
    """Runs of consecutive chunks (sorted chunk ids) as global row ranges."""
    runs = []
    for c in chunks:
        a, b = int(c) * chunk, min((int(c) + 1) * chunk, n_rows)
        if runs and runs[-1][1] == a:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return tuple(runs)


def make_shard(n_rows: int, rank: int, size: int, spec: ShardSpec | str = "block", *, seed: int = 0,
               shares=None) -> Shard:
    """The shard of ``rank`` among ``size`` ranks of a dataset with ``n_rows`` rows.

    ``seed`` draws random's chunk permutation; ``shares`` (one per rank, summing to about 1)
    override block's equal, weighted's static or strided's round-robin shares.
    """
    if isinstance(spec, str):
        spec = parse_shard(spec)
    if spec.strategy == "chunks":
        return chunk_shard(n_rows, rank, size)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} out of range for size {size}")
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    weights = spec.weights if spec.strategy == "weighted" else None
    if shares is not None and len(shares) != size:
        raise ValueError(f"{len(shares)} shares for {size} ranks")

    def offsets_of(total):
        return share_offsets(total, shares) if shares is not None else block_offsets(total, size, weights)

    if spec.strategy == "strided":
        # With shares: rounds of up to STRIDED_GROUP rows per rank, and at least 4 rounds.
        period = size if shares is None else size * int(np.clip(n_rows // (4 * size), 1, STRIDED_GROUP))
        offsets = offsets_of(period)
        a, b = int(offsets[rank]), int(offsets[rank + 1])
        if period >= n_rows:  # at most one round: a plain run
            return Shard(n_rows, rank, size, runs=((min(a, n_rows), min(b, n_rows)),))
        return Shard(n_rows, rank, size, runs=((a, b),) if b > a else (), period=period)
    if spec.strategy == "random":
        check_random_chunk(n_rows, size, spec)
        chunk = random_chunk_rows(n_rows, size, spec)
        n_chunks = -(-n_rows // chunk)
        order = np.random.RandomState(seed).permutation(n_chunks)
        offsets = offsets_of(n_chunks)
        mine = np.sort(order[offsets[rank]:offsets[rank + 1]])
        return Shard(n_rows, rank, size, runs=_merge(mine, chunk, n_rows))
    offsets = offsets_of(n_rows)
    return Shard(n_rows, rank, size, runs=((int(offsets[rank]), int(offsets[rank + 1])),))
