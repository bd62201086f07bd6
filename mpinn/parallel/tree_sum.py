"""Sums whose bits do not depend on the number of ranks: fixed chunks, a fixed binary tree.

An Allreduce adds the ranks' partial sums in an order that depends on N (and on the MPI
library), so N ranks and one rank differ in the last bits, and an optimizer that amplifies
them (L-BFGS's line search) ends in another model. Here the rows are cut into C chunks that
depend only on the data (partition.tree_chunking), each chunk's partial sum is computed the same way on
whichever rank holds it, and the chunk sums are combined along one binary tree over the chunk
indices: node (j, k) covers chunks [k 2^j, (k+1) 2^j) and is left child + right child.

Rank r holds a contiguous range of chunks (partition.chunk_shard). It computes the largest tree
nodes that lie inside its range (at most 2 log2 C of them, one when N and C are powers of
two), every rank receives every rank's nodes (one Allgatherv), and every rank finishes the
tree with the same additions in the same order: the result is bit for bit the one-rank sum,
on every rank, whatever the MPI library does.
"""

from __future__ import annotations

import numpy as np

from mpinn.data.partition import even_bounds


def covering_nodes(lo, hi, n_chunks):
    """The largest tree nodes (j, k) whose chunks lie in [lo, hi), left to right."""
    nodes, a = [], lo
    while a < hi:
        j = 0
        while (1 << j) < n_chunks and a % (2 << j) == 0 and min(a + (2 << j), n_chunks) <= hi:
            j += 1
        nodes.append((j, a >> j))
        a = min(a + (1 << j), n_chunks)
    return nodes


def node_value(j, k, known, n_chunks):
    """Node (j, k) from the nodes in ``known`` ({(j, k): array}), by the tree's additions;
    None for a node past the last chunk."""
    if (j, k) in known:
        return known[(j, k)]
    if k << j >= n_chunks:
        return None
    if j == 0:
        raise KeyError(f"chunk {k} is not known")
    left = node_value(j - 1, 2 * k, known, n_chunks)
    right = node_value(j - 1, 2 * k + 1, known, n_chunks)
    return left if right is None else left + right


def root_level(n_chunks):
    return max(0, int(n_chunks - 1).bit_length())


class TreeSum:
    """The N-invariant sum of per-chunk partial sums over the ranks of ``comm``.

    ``lo, hi`` is this rank's chunk range (partition.chunk_shard's).
    """

    def __init__(self, comm, n_chunks, lo, hi):
        self.comm, self.n_chunks, self.lo, self.hi = comm, n_chunks, lo, hi
        bounds = even_bounds(n_chunks, comm.size)
        # Every rank knows every rank's nodes, hence the layout of the gathered rows.
        self.nodes = [covering_nodes(bounds[r], bounds[r + 1], n_chunks) for r in range(comm.size)]
        self.mine = covering_nodes(lo, hi, n_chunks)

    def reduce(self, chunk_sums, width, dtype):
        """The total of the chunk sums over all ranks ({chunk: array of ``width``} here), the
        same bits on every rank and for any number of ranks."""
        leaves = {(0, k): v for k, v in chunk_sums.items()}
        local = np.empty((len(self.mine), width), dtype=dtype)
        for i, (j, k) in enumerate(self.mine):
            local[i] = node_value(j, k, leaves, self.n_chunks)
        gathered = self.comm.allgather_rows(local, [len(nodes) for nodes in self.nodes])
        order = [node for nodes in self.nodes for node in nodes]
        known = {node: gathered[i] for i, node in enumerate(order)}
        return node_value(root_level(self.n_chunks), 0, known, self.n_chunks)
