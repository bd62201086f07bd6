"""A sha256 digest of row arrays computed by all ranks together, the same for any rank count.

The rows of an array are cut into chunks of a fixed byte size (a function of the array alone,
never of N); rank r hashes only the chunks of its block (a block partition of the chunks), the
chunk digests are gathered in chunk order, and the digest of the arrays' dtypes, shapes and the
ordered chunk digests names the data. So each rank hashes ~1/N of the bytes, and 1, 2 or 1,000
ranks give the same digest. An array may be anything sliceable by rows with ``shape`` and
``dtype`` (an h5py dataset or a RowView too: then a rank reads only its chunks).
"""

from __future__ import annotations

import hashlib

import numpy as np

from mpinn.data.partition import block_offsets

CHUNK_BYTES = 1 << 22  # 4 MiB: 10^9 rows of 16 float32 make ~15,000 chunks, 0.5 MB of digests
DIGEST_BYTES = 32


def chunk_rows(shape, dtype, chunk_bytes=CHUNK_BYTES) -> int:
    """Rows per chunk of an array: about ``chunk_bytes``, at least one row."""
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, chunk_bytes // max(1, row_bytes))


def chunk_digest(rows) -> bytes:
    """sha256 of one chunk's values (object arrays, e.g. labels as Python strings, by repr)."""
    a = np.ascontiguousarray(rows)
    return hashlib.sha256(repr(a.tolist()).encode() if a.dtype == object else a.data).digest()  # no copy


def array_digests(a, first: int, last: int, chunk_bytes=CHUNK_BYTES) -> np.ndarray:
    """Digests of chunks [first, last) of ``a``: (last - first, 32) uint8."""
    step = chunk_rows(a.shape, a.dtype, chunk_bytes)
    out = np.empty((last - first, DIGEST_BYTES), dtype=np.uint8)
    for i, c in enumerate(range(first, last)):
        out[i] = np.frombuffer(chunk_digest(a[c * step:(c + 1) * step]), dtype=np.uint8)
    return out


def _as_rows(a):
    """An ndarray, h5py dataset or RowView (data/rows.py) as it is; anything else (a list, a
    DataFrame) as an ndarray."""
    if a is None or (isinstance(a, np.ndarray) or type(a).__module__.startswith("h5py")
                     or getattr(a, "lazy_rows", False) is True) and len(a.shape) >= 1:
        return a
    a = np.asarray(a)
    return a.reshape(1) if a.ndim == 0 else a


def data_digest(comm, arrays, chunk_bytes=CHUNK_BYTES) -> str:
    """Collective: the hex sha256 naming ``arrays`` (None entries allowed), equal on every rank
    and for every rank count. Every rank passes the same arrays (or views of the same data)."""
    arrays = [_as_rows(a) for a in arrays]
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"None\0")
            continue
        n_chunks = -(-a.shape[0] // chunk_rows(a.shape, a.dtype, chunk_bytes))
        bounds = block_offsets(n_chunks, comm.size)
        mine = array_digests(a, int(bounds[comm.rank]), int(bounds[comm.rank + 1]), chunk_bytes)
        every = comm.allgather_rows(mine, np.diff(bounds))
        h.update(f"{np.dtype(a.dtype).str}{tuple(int(d) for d in a.shape)}\0".encode())
        h.update(every.tobytes())
    return h.hexdigest()
