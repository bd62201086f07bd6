"""The only module that imports mpi4py.

Everything the rest of mpinn needs from MPI goes through ``Comm``: in-place buffer reductions
(uppercase mpi4py methods, no pickling), broadcasts from rank 0 of arrays and of small JSON
values (decisions: stop, paths, errors), and whole-job abort. With one process the
collectives are skipped, so mpinn runs serially without mpiexec and without MPI overhead.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from mpinn.parallel.launch import check_launch


def _mpi():
    from mpi4py import MPI

    return MPI


class Comm:
    """A thin wrapper over an mpi4py communicator that counts gradient reductions."""

    def __init__(self, mpi_comm=None, *, calls_alone=False):
        """``calls_alone``: make the hot path's MPI calls with one rank too (skipped by
        default; on COMM_SELF they are real calls that sum one contribution), so that a test
        in one process exercises them."""
        if mpi_comm is None:
            mpi_comm = _mpi().COMM_WORLD
        self.mpi = mpi_comm
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        # Gradient Allreduce calls so far; tests check it is exactly one per step.
        self.allreduce_calls = 0
        self.iallreduce_calls = 0  # overlapped step's layer parts, sharded step's batch weight
        self.reduce_scatter_calls = 0  # the sharded step's gradient reduction
        self.allgather_calls = 0  # the sharded step's parameter exchange
        # The hot path's MPI handles, looked up once (the serial path never imports mpi4py).
        self._calls = self.size > 1 or calls_alone
        # Non-blocking reductions started and not yet waited for: a revoke completes them (a
        # request left pending on a revoked communicator hangs MPI_Finalize under ULFM).
        self._pending = []
        self._in_place = self._sum = None
        if self._calls:
            self._in_place, self._sum = _mpi().IN_PLACE, _mpi().SUM

    # ---- hot path --------------------------------------------------------------------

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        """Sum ``buf`` over all ranks in place, one MPI call, no copy."""
        self.allreduce_calls += 1
        if self._calls:
            self.mpi.Allreduce(self._in_place, buf, op=self._sum)
        return buf

    def start_allreduce_sum(self, part: np.ndarray):
        """Start summing ``part`` in place; returns a request (None with one rank).

        The overlapped step starts one per layer slice of the gradient buffer as backward
        produces it (together the parts cover the buffer exactly once); the sharded step, one
        for the batch weight before the forward pass.
        """
        self.iallreduce_calls += 1
        if not self._calls:
            return None
        request = self.mpi.Iallreduce(self._in_place, part, op=self._sum)
        self._pending.append(request)
        return request

    def reduce_scatter_block_sum(self, send: np.ndarray, recv: np.ndarray) -> np.ndarray:
        """Sum ``send`` (N equal blocks) over all ranks; returns this rank's summed block, in
        ``recv`` (with one rank: ``send`` itself, no copy). One MPI call. Not in place: MPICH
        5.0's in-place Reduce_scatter copies overlapping ranges for large messages and aborts."""
        self.reduce_scatter_calls += 1
        if not self._calls:
            return send
        self.mpi.Reduce_scatter_block(send, recv, op=self._sum)
        return recv

    def allgather_in_place(self, buf: np.ndarray) -> np.ndarray:
        """``buf`` is N equal blocks; every rank contributes block ``rank``, all receive all."""
        self.allgather_calls += 1
        if self._calls:
            self.mpi.Allgather(self._in_place, buf)
        return buf

    def progress(self, requests):
        """Let MPI advance pending reductions (MPICH and Open MPI progress only inside calls)."""
        if self._calls and requests:
            _mpi().Request.Testall(requests)

    def wait_all(self, requests):
        if self._calls and requests:
            MPI = _mpi()
            statuses = [MPI.Status() for _ in requests]
            try:
                MPI.Request.Waitall(requests, statuses)
            except MPI.Exception as exc:  # one request's own error (a rank's death) names the cause
                if exc.Get_error_class() == MPI.ERR_IN_STATUS:
                    for code in (status.Get_error() for status in statuses):
                        if code not in (MPI.SUCCESS, MPI.ERR_PENDING):
                            raise MPI.Exception(code) from None
                raise
            done = {id(r) for r in requests}
            self._pending = [r for r in self._pending if id(r) not in done]

    # ---- setup and per-epoch ----------------------------------------------------------

    def allreduce(self, buf: np.ndarray, op: str = "sum") -> np.ndarray:
        """In-place elementwise reduction with op 'sum', 'max' or 'min' (not counted)."""
        if self.size > 1:
            MPI = _mpi()
            self.mpi.Allreduce(MPI.IN_PLACE, buf, op={"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op])
        return buf

    def reduce_sum_to_root(self, buf: np.ndarray) -> np.ndarray:
        """Sum ``buf`` onto rank 0 in place; other ranks' buffers are left undefined."""
        if self.size > 1:
            MPI = _mpi()
            if self.rank == 0:
                self.mpi.Reduce(MPI.IN_PLACE, buf, op=MPI.SUM, root=0)
            else:
                self.mpi.Reduce(buf, None, op=MPI.SUM, root=0)
        return buf

    def bcast_array(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        if self.size > 1:
            self.mpi.Bcast(buf, root=root)
        return buf

    def bcast_json(self, value=None, root: int = 0):
        """Broadcast a JSON-serialisable value from ``root`` (decisions, not data)."""
        if self.size == 1:
            return value
        data = json.dumps(value).encode() if self.rank == root else b""
        n = np.array([len(data)], dtype=np.int64)
        self.mpi.Bcast(n, root=root)
        raw = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        self.mpi.Bcast(raw, root=root)
        return value if self.rank == root else json.loads(raw.tobytes().decode())

    def bcast_arrays(self, arrays=None, root: int = 0) -> dict:
        """Broadcast a dict of numeric arrays from ``root`` (e.g. a checkpoint read once by
        rank 0): names, dtypes and shapes as JSON, then one Bcast per array."""
        if self.size == 1:
            return arrays
        header = self.bcast_json([[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]
                                 if self.rank == root else None, root=root)
        out = {}
        for name, dtype, shape in header:
            buf = np.ascontiguousarray(arrays[name]) if self.rank == root else np.empty(shape, np.dtype(dtype))
            self.mpi.Bcast(buf, root=root)
            out[name] = buf
        return out

    def gather_json(self, value, root: int = 0):
        """List of every rank's JSON value on ``root`` (None elsewhere); for setup, not data."""
        if self.size == 1:
            return [value]
        data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
        counts = np.empty(self.size, dtype=np.int64)
        self.mpi.Allgather(np.array([data.size], dtype=np.int64), counts)
        out = np.empty(int(counts.sum()), dtype=np.uint8) if self.rank == root else None
        self.mpi.Gatherv(data, [out, counts] if self.rank == root else None, root=root)
        if self.rank != root:
            return None
        bounds = np.concatenate(([0], np.cumsum(counts)))
        return [json.loads(out[a:b].tobytes().decode()) for a, b in zip(bounds[:-1], bounds[1:])]

    def any_error(self, message: str | None):
        """Collective: if any rank has an error message, every rank gets the lowest rank's one.

        Lets each rank check its own part of the input (its shard, its file) and still have the
        whole job fail together with one message, before any training collective runs.
        """
        if self.size == 1:
            return message
        flag = np.array([self.rank if message is not None else self.size], dtype=np.int64)
        self.allreduce(flag, "min")
        first = int(flag[0])
        if first == self.size:
            return None
        return self.bcast_json(message, root=first)

    def gather_rows(self, local: np.ndarray, root: int = 0):
        """Stack every rank's rows (C-contiguous, same trailing shape and dtype) on ``root``."""
        if self.size == 1:
            return local
        counts = np.array([local.size], dtype=np.int64)
        all_counts = np.empty(self.size, dtype=np.int64)
        self.mpi.Allgather(counts, all_counts)
        out = None
        if self.rank == root:
            out = np.empty((int(all_counts.sum()) // max(1, int(np.prod(local.shape[1:]))),) + local.shape[1:],
                           dtype=local.dtype)
        self.mpi.Gatherv(local, [out, all_counts] if self.rank == root else None, root=root)
        return out

    def allgather_rows(self, local: np.ndarray, rows_per_rank) -> np.ndarray:
        """Every rank's rows stacked in rank order, on every rank; each rank's row count is
        known to all (``rows_per_rank``), so one Allgatherv and no count exchange."""
        if self.size == 1:
            return local
        width = int(np.prod(local.shape[1:]))
        counts = np.asarray(rows_per_rank, dtype=np.int64) * width
        out = np.empty((int(sum(rows_per_rank)),) + local.shape[1:], dtype=local.dtype)
        self.mpi.Allgatherv(np.ascontiguousarray(local), [out, counts])
        return out

    def barrier(self):
        if self.size > 1:
            self.mpi.Barrier()

    # ---- sub-communicators and messages (the search's rank groups and its coordinator) ----

    def split(self, color: int) -> "Comm":
        """Collective: a Comm over the ranks that passed the same ``color`` (ordered by rank)."""
        if not hasattr(self.mpi, "Split"):  # the estimators' serial stand-in without mpi4py
            return Comm(self.mpi)
        return Comm(self.mpi.Split(color, self.rank))

    def dup(self) -> "Comm":
        """Collective: the same ranks on a separate channel (its messages never mix with ours)."""
        return Comm(self.mpi.Dup()) if hasattr(self.mpi, "Dup") else Comm(self.mpi)

    def free(self):
        """Release a communicator made by split or dup (never COMM_WORLD)."""
        if hasattr(self.mpi, "Free"):
            self.mpi.Free()

    def threads_can_call_mpi(self) -> bool:
        """True if MPI was initialised with MPI_THREAD_MULTIPLE (mpi4py's default request)."""
        return hasattr(self.mpi, "Split") and _mpi().Query_thread() >= _mpi().THREAD_MULTIPLE

    def send_ints(self, values, dest: int, tag: int):
        """Point-to-point: a few int64 values to ``dest`` (buffer method, no pickling)."""
        self.mpi.Send(np.ascontiguousarray(values, dtype=np.int64), dest=dest, tag=tag)

    def recv_ints(self, count: int, source: int, tag: int) -> np.ndarray:
        buf = np.empty(count, dtype=np.int64)
        self.mpi.Recv(buf, source=source, tag=tag)
        return buf

    def start_recv_ints(self, count: int, source: int, tag: int):
        """Post a receive of ``count`` int64 values: (request, buffer); wait_all([request]) ends it."""
        buf = np.empty(count, dtype=np.int64)
        return self.mpi.Irecv(buf, source=source, tag=tag), buf

    def start_send_ints(self, values, dest: int, tag: int):
        """Start sending a few int64 values: (request, buffer); the buffer must live until it ends."""
        buf = np.ascontiguousarray(values, dtype=np.int64)
        return self.mpi.Isend(buf, dest=dest, tag=tag), buf

    def waiting_sender(self, tag: int):
        """The rank of a message with ``tag`` that has arrived, or None; never blocks."""
        status = _mpi().Status()
        if self.mpi.Iprobe(source=_mpi().ANY_SOURCE, tag=tag, status=status):
            return status.Get_source()
        return None

    def quiet_barrier(self, poll: float = 0.002):
        """A barrier that sleeps while it waits: a rank done early leaves its core to the ranks
        still working (MPICH's blocking calls keep a core busy while they wait)."""
        if self.size > 1:
            request = self.mpi.Ibarrier()
            while not request.Test():
                time.sleep(poll)

    # ---- one node's shared memory (the shm step) -----------------------------------------

    def split_nodes(self, fake_nodes: int = 0):
        """Collective: (node, cross): the ranks that share memory with this one, and the ranks
        with this rank's index on every node (both ordered by rank). ``fake_nodes`` > 0 cuts the
        ranks into that many consecutive blocks instead, so that tests on one machine run the
        two-level path."""
        if self.size == 1 or not hasattr(self.mpi, "Split_type"):
            return self, self
        if fake_nodes:
            node = self.mpi.Split(self.rank * fake_nodes // self.size, self.rank)
        else:
            node = self.mpi.Split_type(_mpi().COMM_TYPE_SHARED, key=self.rank)
        return Comm(node), Comm(self.mpi.Split(node.Get_rank(), self.rank))

    def shared_arrays(self, length: int, dtype, owners: str = "each"):
        """Collective on a node communicator: a SharedWindow of memory every rank here maps.
        ``owners="each"``: one ``length``-element segment per rank (``.segments[r]``);
        ``"first"``: one array on rank 0's memory (``.segments[0]``)."""
        return SharedWindow(self, length, np.dtype(dtype), owners)

    # ---- process failures (ULFM: Open MPI 5 under `mpirun --with-ft ulfm`) ------------------

    def elastic_support(self, environ=os.environ):
        """(True, "") when this job can survive a rank's death, else (False, why)."""
        if not hasattr(self.mpi, "Shrink"):
            return False, "no MPI (one process)"
        library = _mpi().Get_library_version()
        if "Open MPI" not in library:
            return False, f"{library.split()[0]} has no ULFM"
        if environ.get("OMPI_MCA_mpi_ft_enable", "").lower() not in ("1", "true", "yes", "on"):
            return False, "Open MPI without --with-ft ulfm"
        return True, ""

    def is_process_failure(self, exc: BaseException) -> bool:
        return is_process_failure(exc)

    def revoke(self):
        """Make every pending and future operation on this communicator fail on every rank, so
        that ranks waiting elsewhere learn of a failure too."""
        if self.size > 1:
            try:
                self.mpi.Revoke()
            except _mpi().Exception:  # already revoked
                pass
        for request in self._pending:  # they end in error now; each must still be completed
            try:
                request.Wait()
            except _mpi().Exception:
                pass
        self._pending = []

    def agree_all(self, ok: bool) -> bool:
        """Fault-tolerant and uniform: True on every survivor if all passed True and no rank
        failed; False on every survivor otherwise (MPI_Comm_agree)."""
        if self.size == 1:
            return ok
        try:
            return bool(self.mpi.Agree(int(ok)))
        except _mpi().Exception as exc:
            if self.is_process_failure(exc):
                return False
            raise

    def shrink(self):
        """Collective over the survivors: (a Comm of the live ranks, this communicator's ranks
        that are gone), ranks in the same order."""
        global _ranks_lost
        MPI = _mpi()
        new = self.mpi.Shrink()
        _ranks_lost = True
        old_group, new_group = self.mpi.Get_group(), new.Get_group()
        kept = MPI.Group.Translate_ranks(new_group, list(range(new.Get_size())), old_group)
        old_group.Free()
        new_group.Free()
        return Comm(new), sorted(set(range(self.size)) - set(kept))

    def abort(self, code: int = 1):
        """End every rank of the job now (a hang is worse than a lost rank)."""
        sys.stdout.flush()
        sys.stderr.flush()
        if self.size > 1:
            self.mpi.Abort(code)
        raise SystemExit(code)


class SharedWindow:
    """MPI-3 shared memory (``Win.Allocate_shared``): numpy views of every rank's segment, in
    place, no message. Writes become visible to the other ranks at the next ``fence``."""

    def __init__(self, comm: Comm, length: int, dtype: np.dtype, owners: str):
        self.comm = comm
        mine = length if owners == "each" or comm.rank == 0 else 0
        if comm.size == 1 or not hasattr(comm.mpi, "Split_type"):  # one rank: plain memory
            self.win = None
            self.segments = [np.zeros(length, dtype=dtype)]
            return
        MPI = _mpi()
        self.win = MPI.Win.Allocate_shared(mine * dtype.itemsize, dtype.itemsize, comm=comm.mpi)
        self.win.Lock_all(MPI.MODE_NOCHECK)  # one passive epoch for the window's life
        owners_ = range(comm.size) if owners == "each" else [0]
        self.segments = []
        for r in owners_:
            buf, _ = self.win.Shared_query(r)
            self.segments.append(np.frombuffer(buf, dtype=dtype, count=length))
        if comm.rank == 0 or owners == "each":
            self.segments[comm.rank if owners == "each" else 0][...] = 0
        self.fence()

    def fence(self):
        """Collective: every rank's writes so far are visible to all (MPI's unified-memory
        recipe: Sync, Barrier, Sync)."""
        if self.win is not None:
            self.win.Sync()
            self.comm.mpi.Barrier()
            self.win.Sync()

    def free(self):
        """Collective: release the memory; the views must not be used afterwards."""
        if self.win is not None:
            self.segments = []
            self.win.Unlock_all()
            self.win.Free()
            self.win = None


def is_process_failure(exc: BaseException) -> bool:
    """Is ``exc`` MPI's report that a rank died (or that a survivor revoked the channel)?"""
    if "mpi4py.MPI" not in sys.modules or not isinstance(exc, _mpi().Exception):
        return False
    MPI = _mpi()
    failures = {getattr(MPI, name, None) for name in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")}
    return exc.Get_error_class() in failures - {None}


_world = None
_ranks_lost = False  # a shrink happened in this process (Comm.shrink)


def ranks_were_lost() -> bool:
    """Did this process shrink a communicator after a rank's death (Comm.shrink)? Then
    MPI_Finalize must be skipped: under Open MPI 5 with --with-ft ulfm it waits forever for the
    dead rank in some runs (seen in 2 of 10 sharded runs here); the CLI ends the process itself."""
    return _ranks_lost


def world() -> Comm:
    """The job-wide communicator (MPI is initialised on first call, not at import). Refuses a
    launch where each task is its own 1-rank world (check_launch). After a rank was lost
    (elastic training), the survivors' communicator."""
    global _world
    if _world is None:
        comm = Comm()
        check_launch(comm.size)
        _world = comm
    return _world


def replace_world(comm: Comm):
    """Make ``comm`` (the survivors, Comm.shrink) what world() returns from now on."""
    global _world
    _world = comm


def launched_rank(default: int) -> int:
    """This process's rank in the job as launched (MPI_COMM_WORLD, which keeps its numbering
    when ranks are lost), or ``default`` where MPI was not started."""
    if "mpi4py.MPI" not in sys.modules:
        return default
    return _mpi().COMM_WORLD.Get_rank()


def world_rank_if_started():
    """This process's rank in world() if MPI has been started here, else None (no MPI start)."""
    return None if _world is None else _world.rank


class SerialComm:
    """Stands in for an mpi4py communicator when mpi4py is missing: one process, no MPI."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1


def as_comm(value=None) -> Comm:
    """The Comm of a ``comm=`` parameter (estimators, scalers): None for COMM_WORLD (one
    process without MPI when mpi4py is missing), an mpi4py communicator, or a Comm."""
    if value is None:
        try:
            return world()
        except ImportError:
            return Comm(SerialComm())
    return value if isinstance(value, Comm) else Comm(value)


def abort_on_exception():
    """Make an uncaught exception on any rank end the whole job with one clear line.

    Without it, the other ranks wait forever in their next collective. Same effect as running
    a script with `python -m mpi4py script.py`.
    """
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, tb)
        rank = _mpi().COMM_WORLD.Get_rank()
        print(f"mpinn: rank {rank}: {kind.__name__}: {value}", file=sys.stderr, flush=True)
        if _mpi().COMM_WORLD.Get_size() > 1:
            _mpi().COMM_WORLD.Abort(1)
        previous(kind, value, tb)

    sys.excepthook = hook


def library_info() -> dict:
    import mpi4py

    MPI = _mpi()
    return {
        "mpi4py": mpi4py.__version__,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
        "mpi_standard": "%d.%d" % MPI.Get_version(),
    }
