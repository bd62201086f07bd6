"""HDF5 shard read throughput (mpinn.data.hdf5.read_shard) vs numpy reading the same bytes.

    python bench/io_read.py --data out/bench/big.h5 --ranks 2

Times reading rank 0's block shard of X (1/--ranks of the rows) through h5py as mpinn does,
and np.fromfile of exactly those bytes at the dataset's file offset (the datasets are
contiguous). "warm": the file is in the page cache; "cold": the file's pages are dropped with
posix_fadvise(DONTNEED) before each read (no root needed), so both read from the disk.
Best of --repeat reads each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import emit  # noqa: E402


def drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args(argv)
    import h5py
    import numpy as np

    from mpinn.data import hdf5 as datamod
    from mpinn.data.partition import make_shard

    info = datamod.inspect(a.data)
    shard = make_shard(info.n_rows, 0, a.ranks, "block")
    with h5py.File(a.data, "r") as f:
        ds = f[info.x_name]
        dtype, offset = ds.dtype, ds.id.get_offset()
        if offset is None:
            raise SystemExit(f"{a.data}: X is not contiguous; numpy cannot read it directly")
    row_bytes = info.n_features * dtype.itemsize
    nbytes = shard.count * row_bytes

    def via_h5py():
        with h5py.File(a.data, "r") as f:
            X, _ = datamod.read_shard(f, info, shard, dtype, with_y=False)
        return X

    def via_numpy():
        X = np.fromfile(a.data, dtype=dtype, count=shard.count * info.n_features,
                        offset=offset + shard.start * row_bytes)
        return X.reshape(shard.count, info.n_features)

    assert np.array_equal(via_h5py(), via_numpy())
    out = {"bytes": nbytes, "rows": shard.count, "file": os.path.basename(a.data)}
    for mode in ("warm", "cold"):
        for name, fn in (("h5py", via_h5py), ("numpy", via_numpy)):
            best = float("inf")
            for _ in range(a.repeat):
                if mode == "cold":
                    drop_cache(a.data)
                else:
                    fn()
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            out[f"{mode}_{name}_GBps"] = nbytes / best / 1e9
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
