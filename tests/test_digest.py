"""The data digest every rank computes together (mpinn/parallel/digest.py): one value for 1, 2 and
3 ranks, each rank hashing only its block of chunks, equal to a digest computed here from its
definition, and changed by one changed value. Launched under mpiexec (each under a timeout), and
in-process under `mpiexec -n N python -m pytest --with-mpi -m mpi tests/test_digest.py`."""

import hashlib
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mpinn.parallel.comm import Comm
from mpinn.parallel.digest import array_digests, chunk_rows, data_digest
from mpinn.data.partition import block_offsets

from launch import clean_env, mpiexec

CHUNK = 256  # bytes: 77 rows of 5 float64 make 10 chunks of 6 rows (the last one 5)
SCRIPT = """
import json, sys
import h5py
from mpinn.parallel.comm import world
from mpinn.parallel.digest import data_digest
path, chunk = sys.argv[1], int(sys.argv[2])
comm = world()
with h5py.File(path) as f:
    in_memory = data_digest(comm, [f["X"][()], f["y"][()]], chunk)
    from_file = data_digest(comm, [f["X"], f["y"]], chunk)  # each rank reads only its chunks
every = comm.gather_json([in_memory, from_file])  # one line from rank 0: lines of ranks may interleave
if comm.rank == 0:
    print(json.dumps(every), flush=True)
"""


def make_data(n=77, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), rng.integers(0, 3, n)


def by_definition(arrays, chunk_bytes):
    """sha256 over each array's dtype and shape and the sha256 of each of its fixed chunks, in order."""
    h = hashlib.sha256()
    for a in arrays:
        step = max(1, chunk_bytes // (a[:1].nbytes or 1))
        h.update(f"{a.dtype.str}{a.shape}\0".encode())
        for lo in range(0, len(a), step):
            h.update(hashlib.sha256(np.ascontiguousarray(a[lo:lo + step]).tobytes()).digest())
    return h.hexdigest()


def digests_on(ranks, path, chunk=CHUNK):
    proc = subprocess.run([*mpiexec(), "-n", str(ranks), sys.executable, "-c", SCRIPT, str(path), str(chunk)],
                          capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    every = json.loads(proc.stdout)
    assert len(every) == ranks
    return {d for pair in every for d in pair}


def test_one_digest_for_1_2_3_ranks_in_memory_or_read_from_the_file(tmp_path):
    X, y = make_data()
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    expected = by_definition([X, y], CHUNK)
    for ranks in (1, 2, 3):
        assert digests_on(ranks, path) == {expected}, ranks
    # 3 ranks and 2 chunks: rank 2 hashes none
    assert digests_on(3, path, chunk=4096) == {by_definition([X, y], 4096)}


def test_one_changed_value_or_shape_or_dtype_changes_the_digest():
    comm = Comm(calls_alone=False)
    X, y = make_data()
    ref = data_digest(comm, [X, y], CHUNK)
    assert ref == data_digest(comm, [X.copy(), list(y)], CHUNK)  # a list is taken as its array
    changed = X.copy()
    changed[70, 3] = np.nextafter(changed[70, 3], 1)
    assert data_digest(comm, [changed, y], CHUNK) != ref
    labels = y.copy()
    labels[0] = (labels[0] + 1) % 3
    assert data_digest(comm, [X, labels], CHUNK) != ref
    assert data_digest(comm, [X[:-1], y[:-1]], CHUNK) != ref
    assert data_digest(comm, [X.astype(np.float32), y], CHUNK) != data_digest(comm, [X, y], CHUNK)
    assert data_digest(comm, [X.reshape(77, 5, 1), y], CHUNK) != ref
    assert data_digest(comm, [X, None], CHUNK) != ref
    strings = np.array(["a", "b", "c"], dtype=object)[y]
    assert data_digest(comm, [X, strings], CHUNK) != data_digest(comm, [X, strings[::-1]], CHUNK)


def test_the_ranks_blocks_of_chunks_tile_the_array():
    X, _ = make_data()
    assert chunk_rows(X.shape, X.dtype, CHUNK) == 6
    whole = array_digests(X, 0, 13, CHUNK)
    for size in (1, 2, 3, 7, 20):
        bounds = block_offsets(13, size)
        parts = [array_digests(X, int(bounds[r]), int(bounds[r + 1]), CHUNK) for r in range(size)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.mpi(min_size=2)
def test_in_process_digest_equals_one_rank_alone(world):
    X, y = make_data(n=1000, seed=world.Get_size())
    alone = data_digest(Comm(_self()), [X, y], CHUNK)
    assert data_digest(Comm(world), [X, y], CHUNK) == alone == by_definition([X, y], CHUNK)


def _self():
    from mpi4py import MPI

    return MPI.COMM_SELF
