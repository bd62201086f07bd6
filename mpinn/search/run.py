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
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from mpinn.errors import InputError

REQUEST, REPLY = 11, 12  # message tags on the coordinator's own channel
POLL_SECONDS, POLL_MAX_SECONDS = 0.001, 0.016
ALLOCATIONS = ("dynamic", "round-robin")


class Groups:
    """This rank's group and the channel to the coordinator (collective to build and close)."""

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


class _Queue:
    """Rank 0's list of pending tasks, taken from by its main thread and its coordinator."""

    def __init__(self, order):
        self.order, self.next, self.lock = list(order), 0, threading.Lock()
        self.done = {}  # leader -> tasks it has finished (as last reported)

    def take(self, leader, finished):
        with self.lock:
            self.done[leader] = finished
            if self.next >= len(self.order):
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


def run_tasks(groups, pending, costs, allocation, execute, progress=None):
    """Run the pending task ids on the groups; ``execute(task)`` runs on every rank of the task's
    group and returns the record on its leader (None elsewhere). Returns this leader's
    {task: record} (empty on other ranks). ``progress(done, total)`` is called on rank 0."""
    records = {}
    G, g = groups.count, groups.index
    longest = sorted(pending, key=lambda t: (-costs[t], t))
    use_thread = allocation == "dynamic" and G > 1 and groups.world.threads_can_call_mpi()
    if allocation == "round-robin" or (allocation == "dynamic" and not use_thread):
        mine = pending[g::G] if allocation == "round-robin" else lpt_assignment(longest, costs, G)[g]
        for i, t in enumerate(mine):
            record = execute(t)
            if groups.leader:
                records[t] = record
            if progress and groups.world.rank == 0:  # this group's share stands for all
                progress(min(len(pending), (i + 1) * G), len(pending))
        return records
    queue = _Queue(longest) if groups.world.rank == 0 else None
    coordinator = None
    if queue is not None and G > 1:
        coordinator = threading.Thread(target=_serve, args=(groups, queue, progress, len(pending)),
                                       name="mpinn-search-coordinator", daemon=True)
        coordinator.start()
    ask = _Asker(groups, queue)
    t = ask.first() if groups.leader else -1
    while True:
        if groups.size > 1:
            t = int(groups.comm.bcast_array(np.array([t], dtype=np.int64))[0])
        if t < 0:
            break
        if groups.leader:
            ask.start()  # the next task is fetched while this one runs
        record = execute(t)
        if groups.leader:
            records[t] = record
            t = ask.finish()
            if progress and queue is not None:
                progress(queue.finished, len(pending))
    if coordinator is not None:
        coordinator.join()
    return records


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
    (-1: none left) until every leader has been told to stop. Polls every 1 ms after a request,
    backing off to 16 ms while none comes (leaders ask one task ahead, so latency is hidden)."""
    try:
        channel, active, pause = groups.channel, groups.count - 1, POLL_SECONDS
        while active:
            source = channel.waiting_sender(REQUEST)
            if source is None:
                time.sleep(pause)
                pause = min(2 * pause, POLL_MAX_SECONDS)
                continue
            pause = POLL_SECONDS
            finished = int(channel.recv_ints(1, source, REQUEST)[0])
            t = queue.take(source, finished)
            channel.send_ints([t], source, REPLY)
            if progress:
                progress(queue.finished, total)
            active -= t < 0
    except BaseException as exc:  # noqa: BLE001 - a dead coordinator would leave every leader waiting
        print(f"mpinn: rank 0: search coordinator failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        groups.world.abort(1)


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
