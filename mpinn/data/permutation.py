"""A keyed pseudo-random permutation of 0..n-1 that is evaluated one index at a time.

``RandomState.shuffle`` (scikit-learn's order) must build the whole permutation to tell where
any one index goes: O(n) memory and time on every rank. Here the image of index i is computed
from i and the key alone, so a rank maps only the rows it owns: O(rows) memory and time,
whatever n is. No MPI, no state beyond the key: the same key gives the same permutation on
every rank and in every run.

Construction: a Feistel network on the ``bits``-bit integers (bits = ceil(log2 n)), made of
ROUNDS rounds that each swap the two halves and mix one into the other with a keyed hash
(the splitmix64 finaliser), is a bijection of 0..2^bits-1 for any round function. Indices
that land at n or beyond are sent through again ("cycle walking") until they fall in 0..n-1,
which gives a bijection of 0..n-1; as 2^bits < 2n, that takes two passes on average.
"""

from __future__ import annotations

import numpy as np

ROUNDS = 6  # Luby-Rackoff: 4 rounds of a pseudo-random function already give a pseudo-random permutation
CHUNK = 1 << 16  # indices per vectorised pass: bounded temporaries (~0.5 MB each)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _hash(values, key):
    """splitmix64's finaliser of values + key (uint64, wrapping): a well-mixed 64-bit hash."""
    z = values + key
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


class KeyedPermutation:
    """A bijection of 0..n-1 chosen by ``key`` (an int >= 0 or a sequence of them)."""

    def __init__(self, n, key, rounds=ROUNDS):
        self.n = int(n)
        # At least 2 bits, so that both halves have a bit to mix even for n <= 2.
        self.bits = max(2, (self.n - 1).bit_length())
        high = self.bits // 2
        # Each round swaps the halves, so their widths alternate; an even count ends as it began.
        self.widths = [(high, self.bits - high) if i % 2 == 0 else (self.bits - high, high) for i in range(rounds)]
        self.keys = np.random.SeedSequence(key).generate_state(rounds, np.uint64)

    def _encrypt(self, x):
        for key, (wl, wr) in zip(self.keys, self.widths):
            left, right = x >> np.uint64(wr), x & np.uint64((1 << wr) - 1)
            x = (right << np.uint64(wl)) | (left ^ (_hash(right, key) & np.uint64((1 << wl) - 1)))
        return x

    def _decrypt(self, y):
        for key, (wl, wr) in zip(self.keys[::-1], self.widths[::-1]):
            right, mixed = y >> np.uint64(wl), y & np.uint64((1 << wl) - 1)
            y = ((mixed ^ (_hash(right, key) & np.uint64((1 << wl) - 1))) << np.uint64(wr)) | right
        return y

    def _walk(self, step, indices):
        idx = np.asarray(indices)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise ValueError(f"indices must lie in 0..{self.n - 1}")
        out = np.empty(idx.shape, dtype=np.int64)
        flat_in, flat_out = idx.reshape(-1), out.reshape(-1)
        for start in range(0, flat_in.size, CHUNK):
            y = step(flat_in[start:start + CHUNK].astype(np.uint64))
            outside = np.flatnonzero(y >= self.n)
            while outside.size:  # cycle walking: at most a few passes, over ever fewer indices
                again = step(y[outside])
                y[outside] = again
                outside = outside[again >= self.n]
            flat_out[start:start + CHUNK] = y
        return out

    def __call__(self, indices):
        """Where each index goes: int64 array of the shape of ``indices``."""
        return self._walk(self._encrypt, indices)

    def inverse(self, images):
        """Which index goes to each image: ``p.inverse(p(i)) == i``."""
        return self._walk(self._decrypt, images)
