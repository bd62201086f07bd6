"""How a search's groups stop together: a group that fails or is signalled runs no further
task and tells the others (the coordinator's queue, or a STOP notice to every leader, seen
between tasks or, by a watcher thread, at the group's next step); ``finish`` then gives every
rank one outcome and leaves no message behind.
"""

from __future__ import annotations

import threading

import numpy as np

from mpinn.parallel.agree import agree
from mpinn.parallel.comm import is_process_failure

REQUEST, REPLY, STOP = 11, 12, 13  # message tags on the coordinator's own channel
POLL_SECONDS, POLL_MAX_SECONDS = 0.001, 0.016


class Stop:
    """This group's reason to stop, and how the other groups learn of it: the dynamic
    allocation's coordinator hands out no more tasks; otherwise a STOP message goes to every
    other leader, which looks for one between tasks (a non-blocking probe)."""

    def __init__(self, groups, stop_requested):
        self.groups, self.requested, self.queue = groups, stop_requested, None
        self.error, self.sent = None, []
        self.notified = False  # a STOP notice came in (the watcher thread saw it mid-task)
        self.watcher = None
        if groups.leader and groups.count > 1 and groups.world.threads_can_call_mpi():
            self.watcher = _NoticeWatcher(groups.channel, self._noticed)

    def _noticed(self):
        """Another group stopped: make this group's fit stop at its next step (the flag travels
        in its reduction, as a signal's does); it then raises Preempted, which is not our error."""
        from mpinn.parallel.faults import Preemption

        self.notified = True
        Preemption.requested = True

    def close(self):
        if self.watcher is not None:
            self.watcher.close()

    def check(self):
        """The leader's view: True when its group should run no further task."""
        if self.error is not None:
            return True
        groups = self.groups
        if self.notified:
            self.error = StopIteration("another group stopped the search")
            return True
        if self.requested is not None and self.requested():
            self.fail(_signal_error())
            return True
        if groups.count > 1:
            # With a coordinator, its thread notices the STOP notices (rank 0's queue stops).
            told = self.queue.stopped if self.queue is not None else groups.channel.waiting_sender(STOP) is not None
            if told:
                self.error = StopIteration("another group stopped the search")  # not this group's error
                return True
        return False

    def halted(self):
        """Between tasks, on every rank of the group: the leader decides, the group follows."""
        halted = self.check() if self.groups.leader else False
        if self.groups.size > 1:
            halted = bool(self.groups.comm.bcast_array(np.array([halted], dtype=np.int64))[0])
        if halted and self.error is None:
            self.error = StopIteration("stopped with the group's leader")
        return halted

    def fail(self, error):
        """This group stops with ``error`` (the same on its ranks) and tells the others."""
        groups = self.groups
        if groups.size > 1:  # the leader's watcher may have stopped the fit: the group agrees on it
            self.notified = bool(groups.comm.bcast_array(np.array([self.notified], dtype=np.int64))[0])
        if self.notified and _is_signal(error):
            error = StopIteration("another group stopped the search")  # the fit stopped for them
        if self.error is None or isinstance(self.error, StopIteration):
            self.error = error
        if isinstance(error, StopIteration):
            return
        if not groups.leader or groups.count == 1 or self.sent:
            return
        if self.queue is not None:
            self.queue.stopped = True
        others = [r for r in range(0, groups.world.size, groups.size) if r != groups.world.rank]
        self.sent = [groups.channel.start_send_ints([groups.index], r, STOP) for r in others]

    def own_error(self):
        return None if isinstance(self.error, StopIteration) else self.error


class _NoticeWatcher:
    """A leader's thread that looks for a STOP notice while its group trains (1 ms polls, backing
    off to 16 ms, as the coordinator's), so a failing group stops the others at their next step,
    not only at their next task."""

    def __init__(self, channel, noticed):
        self.channel, self.noticed, self.done = channel, noticed, threading.Event()
        self.thread = threading.Thread(target=self._run, name="mpinn-search-notices", daemon=True)
        self.thread.start()

    def _run(self):
        pause = POLL_SECONDS
        while not self.done.wait(pause):
            try:
                if self.channel.waiting_sender(STOP) is not None:
                    self.noticed()
                    return
            except BaseException as exc:  # noqa: BLE001 - the main thread meets it at its next call
                if is_process_failure(exc):
                    return  # the group's task runs to its end and is recorded
                raise
            pause = min(2 * pause, POLL_MAX_SECONDS)

    def close(self):
        self.done.set()
        self.thread.join()


def _is_signal(error):
    from mpinn.parallel.faults import Preempted

    return isinstance(error, (Preempted, KeyboardInterrupt))


def finish(groups, stop):
    """Collective over all ranks after run_tasks: every rank raises the lowest failing rank's
    error when any group failed or was signalled, else returns. Leaves no message behind."""
    stop.close()
    world = groups.world
    failed_groups = np.array([1 if stop.sent else 0], dtype=np.int64)
    if groups.leader and groups.count > 1:
        world.allreduce(failed_groups, "sum")
        expected = int(failed_groups[0]) - (1 if stop.sent else 0)
        for _ in range(expected):  # the STOP notices addressed to this leader, read or not
            source = None
            while source is None:
                source = groups.channel.waiting_sender(STOP)
            groups.channel.recv_ints(1, source, STOP)
        groups.channel.wait_all([request for request, _ in stop.sent])
    elif groups.count > 1:
        world.allreduce(failed_groups, "sum")
    agree(world, stop.own_error())


def _signal_error():
    """What a signal noticed between tasks stops the search with (as in a fit: faults.py)."""
    from mpinn.parallel.faults import Interrupted, Preempted, Preemption

    if Preemption.names and Preemption.names <= {"SIGINT"}:
        return Interrupted("search interrupted by SIGINT; run it again with the same checkpoint to resume")
    return Preempted(f"search stopped by {Preemption.signal_name or 'a signal'}; run it again with the same "
                     "checkpoint to resume")
