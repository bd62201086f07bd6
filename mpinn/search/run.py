"""Running a search's tasks on rank groups: the split of the ranks, the two allocations, the
coordinator of the dynamic one, and collecting every group's records.

The communicator is split into G = N / group_size groups of consecutive ranks; each task is
one data-parallel fit on its group, and only the group's leader (its rank 0) scores, records
and talks to the coordinator.

- round-robin: pending task i goes to group i mod G, fixed in advance; no messages at all.
- dynamic: a coordinator hands the next task, longest expected first, to whichever group asks.
  It is a thread of rank 0 (whose main thread works in group 0 like every other rank) that
  polls for requests with a non-blocking probe and sleeps between polls (1 ms, backing off to
  16 ms): a blocking receive keeps a core busy while it waits (MPICH: 3 s of CPU per 3 s). Leaders ask for their next
  task when they start one, so the answer waits for them and the sleeps cost no latency.
  Needs MPI_THREAD_MULTIPLE (mpi4py asks for it); without it the tasks are assigned in advance,
  longest first to the least loaded group (LPT).

When a rank dies (MPI with ULFM), no task result is invented from it: a fit whose collective
fails, the coordinator and every leader raise MPI's process failure, after revoking the
search's communicators (``Groups.revoke_all``) so that no survivor is left waiting for the dead rank
in another group's or the coordinator's channel. `mpinn search` then continues on the survivors
from the task log (cli/search.py), where the dead rank's task is simply not recorded.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from mpinn.errors import InputError
from mpinn.parallel.agree import agree
from mpinn.parallel.comm import is_process_failure
from mpinn.search.stopping import POLL_MAX_SECONDS, POLL_SECONDS, REPLY, REQUEST, STOP, Stop
from mpinn.search.tasks import TaskFailed

ALLOCATIONS = ("dynamic", "round-robin")


class Groups:
    """This rank's group and the channel to the coordinator (collective to build and close).
    Used as ``with Groups(comm, size) as team:``, which closes them on the way out, after
    revoking them all when a rank died (``revoke_all``)."""

    def __init__(self, comm, group_size):
        if comm.size % group_size:
            raise InputError(f"group_size {group_size} does not divide the {comm.size} ranks")
        self.world = comm
        self.size = group_size
        self.count = comm.size // group_size
        self.index = comm.rank // group_size
        self.comm = comm.split(self.index) if self.count > 1 else comm
        self.leader = self.comm.rank == 0
        self.channel = comm.dup() if self.count > 1 else None

    def close(self):
        if self.count > 1:
            self.comm.free()
            self.channel.free()

    def revoke_all(self):
        """After a process failure: fail every pending and future call on the search's
        communicators, on every rank (the failure itself is seen only by the ranks that talk to
        the dead one), so that no survivor waits for it anywhere."""
        for comm in {id(c): c for c in (self.comm, self.channel, self.world) if c is not None}.values():
            comm.revoke()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if is_process_failure(error):
            self.revoke_all()
        self.close()


class _Queue:
    """Rank 0's list of pending tasks, taken from by its main thread and its coordinator; once
    ``stopped`` (some group failed or was signalled) it hands out no more."""

    def __init__(self, order):
        self.order, self.next, self.lock = list(order), 0, threading.Lock()
        self.done = {}  # leader -> tasks it has finished (as last reported)
        self.stopped, self.failure = False, None
        self.abandoned = False  # rank 0 left the search on a rank's death: the coordinator ends now

    def take(self, leader, finished):
        with self.lock:
            self.done[leader] = finished
            if self.stopped or self.next >= len(self.order):
                return -1
            self.next += 1
            return self.order[self.next - 1]

    @property
    def finished(self):
        return sum(self.done.values())


def lpt_assignment(order, costs, groups):
    """Longest task first to the group with the least expected work so far."""
    load, mine = [0.0] * groups, [[] for _ in range(groups)]
    for t in order:
        g = min(range(groups), key=lambda i: (load[i], i))
        load[g] += costs[t]
        mine[g].append(t)
    return mine


def run_tasks(groups, pending, costs, allocation, execute, progress=None, stop_requested=None):
    """Run the pending task ids on the groups; ``execute(task)`` runs on every rank of the task's
    group and returns the record on its leader (None elsewhere). ``progress(done, total)`` is
    called on rank 0; ``stop_requested()`` (a signal's flag) is looked at between tasks.

    Returns (this leader's {task: record}, error): error is the exception that stopped this
    group (the same on each of its ranks: parallel/agree.py), or None. A group that fails (or
    is signalled) runs no further task and tells the others, which stop at their next task
    boundary; the caller then agrees on one error for every rank (``finish``).
    """
    stop = Stop(groups, stop_requested)
    try:
        return _run_tasks(groups, stop, pending, costs, allocation, execute, progress)
    except BaseException:  # a rank died: no thread of this search may outlive its communicators
        stop.close()
        raise


def _run_tasks(groups, stop, pending, costs, allocation, execute, progress):
    records = {}
    G, g = groups.count, groups.index
    longest = sorted(pending, key=lambda t: (-costs[t], t))
    use_thread = allocation == "dynamic" and G > 1 and groups.world.threads_can_call_mpi()
    if allocation == "round-robin" or (allocation == "dynamic" and not use_thread):
        mine = pending[g::G] if allocation == "round-robin" else lpt_assignment(longest, costs, G)[g]
        for i, t in enumerate(mine):
            if stop.halted():
                break
            record, error = _run_in_group(groups, execute, t)
            if error is not None:
                stop.fail(error)
                break
            if groups.leader:
                records[t] = record
            if progress and groups.world.rank == 0:  # this group's share stands for all
                progress(min(len(pending), (i + 1) * G), len(pending))
        return records, stop
    queue = _Queue(longest) if groups.world.rank == 0 else None
    stop.queue = queue
    coordinator = None
    if queue is not None and G > 1:
        coordinator = threading.Thread(target=_serve, args=(groups, queue, progress, len(pending)),
                                       name="mpinn-search-coordinator", daemon=True)
        coordinator.start()
    try:
        _take_tasks(groups, stop, queue, execute, progress, len(pending), records)
    except BaseException:
        if queue is not None:
            queue.abandoned = True  # the coordinator ends without waiting for the other leaders
        raise
    finally:
        if coordinator is not None:
            coordinator.join()
    if is_process_failure(queue.failure if queue is not None else None):
        raise queue.failure
    if queue is not None and queue.failure is not None:
        stop.fail(queue.failure)
    return records, stop


def _take_tasks(groups, stop, queue, execute, progress, total, records):
    """The dynamic allocation's loop on every rank: the leader asks for a task, the group runs it."""
    ask = _Asker(groups, queue)
    t = ask.first() if groups.leader else -1
    while True:
        halted = stop.check() if groups.leader else False  # once stopped, the leader still asks until told -1
        if groups.size > 1:
            t, halted = (int(v) for v in groups.comm.bcast_array(np.array([t, halted], dtype=np.int64)))
        if t < 0:
            break
        if groups.leader:
            ask.start()  # the next task is fetched while this one runs
        if not halted:
            record, error = _run_in_group(groups, execute, t)
            if error is not None:
                stop.fail(error)
            elif groups.leader:
                records[t] = record
        if groups.leader:
            t = ask.finish()
            if progress and queue is not None:
                progress(queue.finished, total)


def _run_in_group(groups, execute, t):
    """(record, None), or (None, the exception) on every rank of the group when any raised."""
    error = None
    try:
        record = execute(t)
    except BaseException as exc:  # noqa: BLE001 - made the group's outcome below
        if is_process_failure(exc):  # a rank died: no outcome of this task
            raise
        # error_score="raise": the exception the estimator raised, where this rank has it
        record, error = None, exc.original if isinstance(exc, TaskFailed) and exc.original else exc
    try:
        agree(groups.comm, None if isinstance(error, TaskFailed) else error)  # the original, if any rank has it
        agree(groups.comm, error)
    except BaseException as agreed:  # noqa: BLE001 - the group's error, re-raised by the caller later
        if is_process_failure(agreed):
            raise
        return None, agreed
    return record, None


class _Asker:
    """A leader's requests for tasks: rank 0 takes from its queue, the others ask the coordinator
    and keep one request ahead, so its answer is waiting when a task ends."""

    def __init__(self, groups, queue):
        self.channel, self.queue = groups.channel, queue
        self.finished, self.pending = 0, None

    def first(self):
        if self.queue is not None:
            return self.queue.take(0, 0)
        self.channel.send_ints([0], 0, REQUEST)
        return int(self.channel.recv_ints(1, 0, REPLY)[0])

    def start(self):
        if self.queue is None:
            self.pending = (self.channel.start_send_ints([self.finished], 0, REQUEST),
                            self.channel.start_recv_ints(1, 0, REPLY))

    def finish(self):
        self.finished += 1
        if self.queue is not None:
            return self.queue.take(0, self.finished)
        (send, _), (recv, buf) = self.pending
        self.channel.wait_all([send, recv])
        return int(buf[0])


def _serve(groups, queue, progress, total):
    """Coordinator thread on rank 0: answer each other leader's request with its next task
    (-1: none left, or the search stopped) until every leader has been told to stop. Polls every
    1 ms after a request, backing off to 16 ms while none comes (leaders ask one task ahead, so
    latency is hidden). A failure here stops the search but still answers every leader: none
    is left waiting, and rank 0 raises it after the tasks (``finish``). A rank's death ends it:
    the channel is revoked, so every leader waiting for an answer learns of it too."""
    try:
        _answer_requests(groups, queue, progress, total)
    except BaseException as exc:  # noqa: BLE001 - raised by rank 0's main thread (run_tasks)
        if not is_process_failure(exc):
            raise
        queue.failure, queue.stopped = exc, True
        groups.channel.revoke()


def _answer_requests(groups, queue, progress, total):
    channel, active, pause = groups.channel, groups.count - 1, POLL_SECONDS
    while active and not queue.abandoned:
        if not queue.stopped and channel.waiting_sender(STOP) is not None:
            queue.stopped = True  # a group failed or was signalled: no more tasks for anyone
        source = channel.waiting_sender(REQUEST)
        if source is None:
            time.sleep(pause)
            pause = min(2 * pause, POLL_MAX_SECONDS)
            continue
        pause = POLL_SECONDS
        finished = int(channel.recv_ints(1, source, REQUEST)[0])
        try:
            t = queue.take(source, finished)
            if progress:
                progress(queue.finished, total)
        except BaseException as exc:  # noqa: BLE001 - raised on rank 0 after the tasks, never lost
            queue.failure, queue.stopped, t = exc, True, -1
        channel.send_ints([t], source, REPLY)
        active -= t < 0


def collect(groups, records, previous):
    """Every rank's copy of all records: ``previous`` (rank 0's, from the checkpoint) plus each
    leader's new ones, as JSON. Ranks done early wait without spinning."""
    world = groups.world
    world.quiet_barrier()
    mine = [[t, r] for t, r in records.items()] if groups.leader else []
    gathered = world.gather_json(mine)
    merged = None
    if world.rank == 0:
        merged = {str(t): r for t, r in previous.items()}
        for part in gathered:
            for t, r in part:
                merged.setdefault(str(t), r)
    merged = world.bcast_json(merged)
    return {int(t): r for t, r in merged.items()}
