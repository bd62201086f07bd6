"""The fixed-tree sum (mpinn/parallel/tree_sum.py): the same bits for any number of ranks.

Serial: the ranks' covering nodes tile the chunks, and finishing the tree from every rank's
nodes gives the one-rank sum bit for bit. Under MPI (2 and 3 ranks): TreeSum over a real
communicator equals the one-rank sum bit for bit on every rank, where an Allreduce does not
promise to.
"""

import numpy as np
import pytest

from mpinn.data.partition import chunk_shard, even_bounds, tree_chunking
from mpinn.parallel.tree_sum import covering_nodes, node_value, root_level


def _chunk_sums(n_chunks, width, seed=0):
    rng = np.random.default_rng(seed)
    # Wide magnitudes: a different order of additions changes the last bits.
    return {(0, k): rng.standard_normal(width) * 10.0 ** rng.integers(-8, 8, width) for k in range(n_chunks)}


def _one_rank(leaves, n_chunks):
    return node_value(root_level(n_chunks), 0, leaves, n_chunks)


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 5, 8, 13, 64, 100])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_ranks_nodes_tile_the_chunks_and_give_the_one_rank_bits(n_chunks, size):
    leaves = _chunk_sums(n_chunks, 17)
    bounds = even_bounds(n_chunks, size)
    known, covered = {}, []
    for r in range(size):
        for j, k in covering_nodes(bounds[r], bounds[r + 1], n_chunks):
            lo, hi = k << j, min((k + 1) << j, n_chunks)
            assert bounds[r] <= lo < hi <= bounds[r + 1]
            covered.extend(range(lo, hi))
            mine = {key: v for key, v in leaves.items() if bounds[r] <= key[1] < bounds[r + 1]}
            known[(j, k)] = node_value(j, k, mine, n_chunks)
    assert covered == list(range(n_chunks))
    assert _one_rank(known, n_chunks).tobytes() == _one_rank(leaves, n_chunks).tobytes()


def test_a_sequential_sum_differs_so_the_test_can_fail():
    """The same values summed left to right give other bits than the tree: the order matters."""
    leaves = _chunk_sums(100, 64, seed=1)
    sequential = sum(leaves[(0, k)] for k in range(100))
    assert sequential.tobytes() != _one_rank(leaves, 100).tobytes()


def test_chunking_depends_on_the_rows_alone_and_shards_hold_whole_chunks():
    for n in (1, 31, 150, 442, 10_000, 10**7):
        chunks, rows = tree_chunking(n)
        assert chunks & (chunks - 1) == 0 and chunks * rows >= n and (chunks == 1 or rows >= 4096)
        for size in (1, 2, 3, 5):
            shards = [chunk_shard(n, r, size) for r in range(size)]
            assert np.array_equal(np.concatenate([s.rows for s in shards]), np.arange(n))
            assert all(s.count == 0 or s.rows[0] % rows == 0 for s in shards)


@pytest.mark.mpi(min_size=2)
def test_tree_sum_over_mpi_is_the_one_rank_sum_on_every_rank():
    from mpinn.parallel.comm import world
    from mpinn.parallel.tree_sum import TreeSum

    comm = world()
    for n_chunks in (1, 3, 8, 13):
        leaves = _chunk_sums(n_chunks, 33, seed=n_chunks)
        bounds = even_bounds(n_chunks, comm.size)
        lo, hi = bounds[comm.rank], bounds[comm.rank + 1]
        total = TreeSum(comm, n_chunks, lo, hi).reduce({k: leaves[(0, k)] for k in range(lo, hi)}, 33, np.float64)
        expected = _one_rank(leaves, n_chunks)
        assert total.tobytes() == expected.tobytes()
        everyone = comm.gather_json(total.tobytes().hex())
        assert comm.rank != 0 or len(set(everyone)) == 1
