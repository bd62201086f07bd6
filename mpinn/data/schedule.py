"""Which rows train, and in which order: the train/test split and the global batch schedule.

No MPI here: everything is a function of the seed, the data size and the shard, so any rank
count can be simulated in one process. Two permutation algorithms (``--permutation``):

- ``sklearn``: scikit-learn's draws, ``RandomState(seed).permutation(n)`` for the split (as
  ``train_test_split``) and ``RandomState.shuffle`` of the index array every epoch (as
  ``MLPClassifier``), which the sklearn-parity tests depend on. Every rank holds the order of
  all n training rows and walks it once per epoch: O(n) memory and time per rank.
- ``keyed``: a KeyedPermutation (mpinn/permutation.py) tells where each row goes from the row
  and a key alone, so a rank maps only the rows it owns: O(n/N + batch) memory and O(n/N)
  time per rank and epoch, for the split and for the shuffle.

``auto`` (the default) is ``sklearn`` up to SKLEARN_MAX_ROWS rows, ``keyed`` above. Both give
the same global batches on any rank count. Each epoch, a rank computes once where each of its
training rows falls in the epoch (a sorted array of positions) and then cuts it into batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpinn.errors import InputError
from mpinn.data.permutation import KeyedPermutation
from mpinn.options import PERMUTATIONS

# Up to here the default is scikit-learn's own permutation (about 20 bytes a row on every rank,
# 200 MB at this size); above it, parity with a library that holds all rows in one process
# is not the point any more, and the per-rank cost of the keyed permutation is n/N.
SKLEARN_MAX_ROWS = 10_000_000
CHUNK = 1 << 16   # rows per vectorised pass over a global array: bounded temporaries
_SPLIT_KEY = 0x5E1EC7  # mixed with the seed: the split's key differs from any epoch's


def resolve_permutation(name, n_rows):
    """'auto' -> 'sklearn' up to SKLEARN_MAX_ROWS rows, else 'keyed'; other names unchanged."""
    if name == "auto":
        return "sklearn" if n_rows <= SKLEARN_MAX_ROWS else "keyed"
    if name not in PERMUTATIONS:
        raise InputError(f"--permutation: choose from {', '.join(PERMUTATIONS)}, got {name!r}")
    return name


def index_dtype(n):
    """int32 when indices 0..n-1 fit in it, else int64: row-index arrays over the global rows
    (train rows, the epoch's order) in half the memory, holding the same values."""
    return np.int32 if n <= np.iinfo(np.int32).max else np.int64


def held_out_count(n_rows, test_fraction):
    """Rows held out: ceil(fraction * n), as sklearn; InputError when train or test is empty."""
    if not 0 < test_fraction < 1:
        raise InputError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    n_test = math.ceil(test_fraction * n_rows)
    if n_test < 1 or n_test >= n_rows:
        raise InputError(f"--test-fraction {test_fraction} leaves no train or no test rows of {n_rows}")
    return n_test


def train_test_split_indices(n_rows, test_fraction, seed):
    """(train, test) global row indices, as sklearn's train_test_split(random_state=seed).

    test count = ceil(fraction * n); order is the permutation's, so the same seed gives the
    same split as sklearn, whatever the number of ranks.
    """
    n_test = held_out_count(n_rows, test_fraction)
    perm = np.random.RandomState(seed).permutation(n_rows)
    itype = index_dtype(n_rows)
    return perm[n_test:].astype(itype), perm[:n_test].astype(itype)


def split_indices(n_rows, test_fraction, seed, permutation):
    """(train, test) global row ids of the whole file, in split_rows' orders: O(n), for tools
    that score held-out rows after training (`mpinn eval --rows test`)."""
    if permutation == "sklearn":
        return train_test_split_indices(n_rows, test_fraction, seed)
    n_test = held_out_count(n_rows, test_fraction)
    at_place = KeyedPermutation(n_rows, [int(seed) % 2**63, _SPLIT_KEY]).inverse(np.arange(n_rows))
    return at_place[n_test:], at_place[:n_test]


def split_part(n_rows, test_fraction, seed, shard, permutation, part):
    """This rank's rows of one part ('test' or 'train') of split_rows' split, as ascending local
    positions in ``shard`` (what `mpinn eval --rows` scores). Keyed: the permutation evaluated
    on the rank's own rows a chunk at a time, O(n/N) and nothing sorted; sklearn: its n-long
    permutation, by nature."""
    n_test = held_out_count(n_rows, test_fraction)
    if permutation == "sklearn":
        train, test = train_test_split_indices(n_rows, test_fraction, seed)
        chosen = test if part == "test" else train
        del train, test
        return np.sort(shard.local_positions(chosen)[1]).astype(index_dtype(shard.count), copy=False)
    place = KeyedPermutation(n_rows, [int(seed) % 2**63, _SPLIT_KEY])
    kept = []
    for start in range(0, shard.count, CHUNK):
        local = np.arange(start, min(start + CHUNK, shard.count), dtype=np.int64)
        held = place(shard.global_rows(local)) < n_test
        kept.append(local[held if part == "test" else ~held])
    return _join(kept, index_dtype(shard.count))


@dataclass
class TrainRows:
    """The training rows as one rank sees them.

    Every training row has a train index in 0..n-1 (its place in the global training order,
    the same on every rank); a rank keeps only its own rows' local positions and indices.
    """

    n: int               # training rows over all ranks
    local: np.ndarray    # this rank's training rows, as local positions, by ascending train index
    index: np.ndarray    # their train indices (ascending)
    shard: object        # the shard ``local`` refers to
    rows: np.ndarray | None = None  # sklearn only: every training row's global id, by train index
    split: tuple | None = None      # keyed only: split_rows' (n_rows, test_fraction, seed)
    holdout: tuple | None = None    # keyed only: hold_out_keyed's (n_val, key), taken after the split

    def __len__(self):
        return self.n

    def for_shard(self, shard):
        """The same training rows as another shard sees them (after rows moved between ranks)."""
        if self.rows is not None:
            return TrainRows.from_array(self.rows, shard)
        train = split_rows(*self.split, shard, "keyed")[0]
        return train if self.holdout is None else train.hold_out_keyed(*self.holdout)[0]

    def hold_out_keyed(self, n_val, key):
        """(the rows left to train on, this rank's held-out rows as local positions): a training
        row is held out when P(its train index) < ``n_val`` for the KeyedPermutation P of ``key``,
        and the others take train index P - n_val, as split_rows splits the file's rows. Each
        rank evaluates P on its own rows only: O(n/N), no communication, nothing n-long."""
        if self.holdout is not None:
            raise ValueError("these training rows already had rows held out")
        place = KeyedPermutation(self.n, key)(self.index)
        held = place < n_val
        kept, kept_local = place[~held], self.local[~held]
        by_index = np.argsort(kept)  # distinct values: any sort gives the same order
        index = (kept[by_index] - n_val).astype(index_dtype(self.n - n_val))
        train = TrainRows(self.n - n_val, kept_local[by_index], index, self.shard, split=self.split,
                          holdout=(int(n_val), int(key)))
        val = self.local[held][np.argsort(place[held], kind="stable")]
        return train, val

    @classmethod
    def from_array(cls, rows, shard):
        """From the global ids of all training rows (train index = place in ``rows``), kept."""
        rows = np.asarray(rows)
        if rows.dtype.kind not in "iu":
            rows = rows.astype(np.int64)
        local, index = [], []
        for start in range(0, len(rows), CHUNK):  # one pass, chunk by chunk: no n-sized mask
            mask, positions = shard.local_positions(rows[start:start + CHUNK])
            local.append(positions)
            index.append(start + np.flatnonzero(mask))
        return cls(len(rows), _join(local, index_dtype(shard.count)), _join(index, index_dtype(len(rows))), shard, rows)


def _join(parts, dtype):
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def split_rows(n_rows, test_fraction, seed, shard, permutation):
    """(TrainRows, this rank's test rows as local positions in the split's order, or None).

    ``sklearn``: train_test_split_indices (or all rows in file order without a test fraction).
    ``keyed``: row i is a test row when P(i) < n_test for the seed's KeyedPermutation P, and
    the others take train index P(i) - n_test; each rank evaluates P on its own rows only.
    """
    if permutation == "sklearn":
        if not test_fraction:
            return TrainRows.from_array(np.arange(n_rows, dtype=index_dtype(n_rows)), shard), None
        train, test = train_test_split_indices(n_rows, test_fraction, seed)
        return TrainRows.from_array(train, shard), shard.local_positions(test)[1]
    n_test = held_out_count(n_rows, test_fraction) if test_fraction else 0
    place = KeyedPermutation(n_rows, [int(seed) % 2**63, _SPLIT_KEY]) if n_test else None
    owned = shard.rows
    local_type, index_type = index_dtype(shard.count), index_dtype(n_rows)
    train_local, train_index, test_local, test_place = [], [], [], []
    for start in range(0, len(owned), CHUNK):
        rows = owned[start:start + CHUNK]
        local = np.arange(start, start + len(rows), dtype=local_type)  # a shard keeps its rows in global order
        where = place(rows) if place is not None else rows
        held = where < n_test
        train_local.append(local[~held])
        train_index.append((where[~held] - n_test).astype(index_type))
        test_local.append(local[held])
        test_place.append(where[held])
    del owned
    index, local = _join(train_index, index_type), _join(train_local, local_type)
    del train_index, train_local
    if n_test:  # without a test fraction the train indices are the rows, already sorted
        by_index = np.argsort(index)  # distinct values: any sort gives the same order
        index, local = index[by_index], local[by_index]
        del by_index
    train = TrainRows(n_rows - n_test, local, index, shard, split=(n_rows, test_fraction, seed))
    if not n_test:
        return train, None
    return train, _join(test_local, np.int64)[np.argsort(_join(test_place, np.int64), kind="stable")]


class BatchSchedule:
    """The sequence of minibatches, as local row positions for this rank.

    shuffle='global': each epoch permutes the training order (``permutation``: sklearn's
    ``shuffle(sample_idx, random_state)``, or a KeyedPermutation keyed by one draw from the
    RandomState), cuts consecutive global batches, and this rank takes the rows it owns: the
    sequence does not depend on N. shuffle='none': the same, unpermuted. shuffle='local':
    each rank permutes its own rows and cuts them into as many pieces as there are global
    batches (no global order at all; depends on N, and on the shard).
    """

    def __init__(self, train_rows, batch_size, shuffle, random_state, shard, local_seed=0, stream=None,
                 permutation=None, shard_spec=None):
        if not isinstance(train_rows, TrainRows):  # a global array of the training rows' ids
            train_rows = TrainRows.from_array(train_rows, shard)
        elif train_rows.shard != shard:  # rows moved between ranks since the split (problem.reshard)
            train_rows = train_rows.for_shard(shard)
        self.train = train_rows
        self.n_train = train_rows.n
        self.permutation = permutation or ("sklearn" if train_rows.rows is not None else "keyed")
        if self.permutation == "sklearn" and train_rows.rows is None:
            raise ValueError("the sklearn permutation needs the global training rows (TrainRows.from_array)")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.random_state = random_state
        self.shard = shard
        self.shard_spec = shard_spec  # for the resume check of 'local'
        self.n_steps = math.ceil(self.n_train / batch_size)
        self.local_seed = local_seed
        # A StreamingRows X (mpinn.stream): batches must visit its chunks in order, so
        # 'local' shuffles the chunk order and the rows within each chunk instead.
        self.stream = stream
        self.order = None  # sklearn + global: the epoch's order of train indices (composed, as sklearn's)
        if shuffle == "global" and self.permutation == "sklearn":
            self.order = np.arange(self.n_train, dtype=index_dtype(self.n_train))
        self.key = None  # keyed + global: the epoch's key, drawn from random_state
        self._positions = self._rows = None  # the epoch's sorted positions of this rank's rows, and those rows

    # ---- one epoch ------------------------------------------------------------------------

    def epoch(self, epoch_index=0, start_step=0):
        """Yield this rank's local row positions for each step of an epoch (maybe empty).

        ``start_step`` > 0 resumes an epoch part-way: the order is the one already drawn for
        it (restored from a checkpoint), so nothing is drawn again.
        """
        if self.shuffle == "local":
            yield from self._local_epoch(epoch_index, start_step)
            return
        if self.stream is not None:
            self.stream.set_order(np.arange(self.stream.n_chunks))
        if start_step == 0:
            self.draw()
        self._positions, self._rows = self.placement()
        yield from self._cut(start_step)

    def draw(self):
        """Start a new epoch: its order (sklearn) or key (keyed), drawn from the shared
        RandomState; the one draw an epoch makes (none without a global shuffle)."""
        if self.shuffle != "global":
            return
        if self.permutation == "sklearn":
            # The draw is sklearn's: shuffle an int64 arange (the permutation does not depend
            # on the stored type; only the composed order is kept, in order's smaller type).
            perm = np.arange(self.n_train, dtype=np.int64)
            self.random_state.shuffle(perm)
            self.order = self.order[perm]
        else:
            self.key = int(self.random_state.randint(0, 2**63 - 1, dtype=np.int64))

    def placement(self):
        """(positions, rows): where this rank's training rows fall in the current epoch's order
        (ascending) and their local positions. Draws nothing (``draw`` starts an epoch)."""
        t = self.train
        if self.shuffle == "none":
            return t.index, t.local
        if self.permutation == "sklearn":
            # One pass over the epoch's order, chunk by chunk, picking the rows this rank owns.
            positions, rows = [], []
            for start in range(0, self.n_train, CHUNK):
                mask, local = self.shard.local_positions(t.rows[self.order[start:start + CHUNK]])
                positions.append(start + np.flatnonzero(mask))
                rows.append(local)
            return _join(positions, index_dtype(self.n_train)), _join(rows, t.local.dtype)
        if self.key is None:
            raise RuntimeError("resuming a keyed epoch part-way needs its key (load_state)")
        positions = KeyedPermutation(self.n_train, self.key)(t.index)
        by_position = np.argsort(positions)  # distinct values: any sort gives the same order
        positions = positions[by_position].astype(index_dtype(self.n_train), copy=False)
        return positions, t.local[by_position]

    def _cut(self, start_step, block=4096):
        """Batch j holds the rows at positions [j*B, (j+1)*B): boundaries by binary search,
        ``block`` steps at a time (no array of all n/B boundaries)."""
        positions, rows, b = self._positions, self._rows, self.batch_size
        for first in range(start_step, self.n_steps, block):
            steps = np.arange(first, min(first + block, self.n_steps) + 1, dtype=np.int64)
            # In the positions' own type, or searchsorted would convert all of them every call.
            starts = np.minimum(steps * b, self.n_train).astype(positions.dtype)
            bounds = np.searchsorted(positions, starts).tolist()
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                yield rows[lo:hi]

    def _local_epoch(self, epoch_index, start_step):
        # Drawn from (seed, epoch, rank, size) alone, so a resumed epoch redraws the same.
        rng = np.random.RandomState([self.local_seed, epoch_index, self.shard.rank, self.shard.size])
        if self.stream is not None:
            from mpinn.data.stream import chunk_order_rows

            rows, order = chunk_order_rows(self.shard.count, self.stream.chunk_rows, rng)
            self.stream.set_order(order)
        else:
            rows = self.train.local.copy()
            rng.shuffle(rows)
        # The pieces of np.array_split(rows, n_steps), one at a time.
        size, extra = divmod(len(rows), self.n_steps)
        for j in range(start_step, self.n_steps):
            lo = j * size + min(j, extra)
            yield rows[lo:lo + size + (j < extra)]

    # ---- checkpoint state -----------------------------------------------------------------

    def state(self):
        """Arrays for a checkpoint: the sklearn order (int64, whatever is kept in memory)."""
        return {} if self.order is None else {"order": self.order.astype(np.int64)}

    def scalars(self):
        """JSON for a checkpoint: what a resumed run needs and checks."""
        return {"shuffle": self.shuffle, "permutation": self.permutation, "key": self.key,
                "ranks": self.shard.size, "shard": self.shard_spec,
                "chunk_rows": None if self.stream is None else int(self.stream.chunk_rows)}

    def check_resume(self, saved, mid_epoch):
        """InputError when a checkpoint's batches cannot be continued exactly by this schedule.
        ``saved``: its scalars() (None from checkpoints that predate them)."""
        saved = saved or {}
        was = saved.get("permutation", "sklearn")
        if was != self.permutation:  # another split and another order
            raise InputError(f"--resume: the checkpoint's batches come from the {was} permutation, this run's from "
                             f"{self.permutation}; rerun with --permutation {was}")
        if not mid_epoch or self.shuffle != "local":
            return
        # Each rank drew its own order from (seed, epoch, rank, size) over its own rows: only the
        # same ranks, shards and stream chunks continue the interrupted epoch exactly.
        now = self.scalars()

        def layout(s):
            return (f"{s['ranks']} rank(s), --shard {s['shard']}"
                    + ("" if s["chunk_rows"] is None else f", --stream chunks of {s['chunk_rows']} rows"))

        if any(saved.get(k, "unrecorded") != now[k] for k in ("ranks", "shard", "chunk_rows")):
            then = layout(saved) if "ranks" in saved else "an unrecorded layout"
            raise InputError(f"--resume: the checkpoint stopped part-way through an epoch of --shuffle local on {then}; "
                             f"this run has {layout(now)}: resume on the same layout, or from an end-of-epoch checkpoint")

    def load_state(self, arrays, scalars=None):
        """Continue from state()/scalars(); checkpoints that predate scalars() hold only the order."""
        if self.order is not None and "order" in arrays:
            self.order = np.asarray(arrays["order"]).astype(index_dtype(self.n_train))
        if scalars and scalars.get("key") is not None:
            self.key = int(scalars["key"])
