"""The training loop's side of dynamic load balancing: timing, decisions in lockstep, row moves.

Each rank times the compute of every step (CPU seconds of its thread) and, under MPINN_SLOW,
stands in for a slower node by sleeping. With --balance dynamic, every few steps the ranks
send their window's speed to rank 0, whose ``balance.Balancer`` decides the row shares
(parallel/balance.py holds that rule; this module only measures, communicates and applies it), and
every rank takes its rows under the shares it broadcasts. Also kept here: the per-rank fields
of the epoch record (compute seconds, shares, moves) and the shares a checkpoint carries.
"""

from __future__ import annotations

import time

import numpy as np

from mpinn.parallel.balance import Balancer, check_interval, window_speed
from mpinn.errors import InputError


class LoadBalancing:
    """One rank's compute timing and, with --balance dynamic, its part in moving rows (collective)."""

    def __init__(self, cfg, problem, comm, n_steps, slow, take_shares):
        """``problem``: the rows this rank starts with (not kept: moving rows makes a new one).
        ``slow`` maps a rank to the factor by which it is made slower (balance.parse_slow);
        ``take_shares(shares)`` makes this rank's rows those it owns under ``shares``."""
        self.cfg, self.comm, self._take_shares = cfg, comm, take_shares
        self._slow = float(slow.get(comm.rank, 1.0))
        self._compute_start, self._compute_wall = time.thread_time(), time.perf_counter()
        self._window_rows, self._window_busy = [], []  # per step since the window began
        self._busy_epoch = 0.0       # busy seconds this epoch (the per-rank times logged)
        self._moves, self._move_seconds = 0, 0.0
        self.shares = None           # decided shares; None: the --shard strategy's own
        self.balancer = None         # rank 0 decides with it; the others keep it for checkpoints
        dynamic = getattr(cfg, "balance", "static") == "dynamic"
        self.per_rank = dynamic or bool(slow)  # the epoch record shows each rank's times and shares
        if dynamic:
            if problem.sample_weight is not None or problem.Y is not None or not cfg.data:
                raise InputError("--balance dynamic re-reads rows from the --data file; it needs `mpinn train`")
            counts = np.zeros(comm.size)
            counts[comm.rank] = problem.shard.count
            comm.allreduce(counts, "sum")
            self.balancer = Balancer(comm.size, (counts / counts.sum()).tolist())
            self._interval = check_interval(n_steps)

    # ---- timing, called by every step ---------------------------------------------------------

    def compute_starts(self, rows, wall):
        """A step's compute on ``rows`` local rows begins (``wall``: perf_counter now)."""
        self._compute_wall = wall
        self._compute_start = time.thread_time()
        if self.balancer is not None:
            self._window_rows.append(rows)

    def compute_done(self):
        """The step's compute has ended (before its reduction): count its busy seconds."""
        # CPU seconds of this thread: what a slower core costs, not the time other processes
        # took the core away (noise that would move rows back and forth on a busy machine).
        busy = time.thread_time() - self._compute_start
        if self._slow > 1:  # MPINN_SLOW: a slower node, stood in for by sleeping; the sleep
            # counts as compute (F x the CPU seconds) and lasts (F - 1) x the compute's wall time
            time.sleep((self._slow - 1) * (time.perf_counter() - self._compute_wall))
            busy *= self._slow
        if self.balancer is not None:
            self._window_busy.append(busy)
        self._busy_epoch += busy

    # ---- decisions and moves ------------------------------------------------------------------

    def rebalance_if_due(self, global_step, epoch_ended):
        """Collective, after a step (``global_step`` steps done; the last of its epoch if
        ``epoch_ended``): look at the speeds if it is time; True if the rows moved."""
        if self.balancer is None:
            return False
        if self.cfg.shuffle == "local":  # local batches come from the shard: change it between epochs only
            due = epoch_ended
        else:
            due = global_step % self._interval == 0
        return due and self._rebalance()

    def _rebalance(self):
        """Collective: rank 0 gathers every rank's window (rows, busy seconds), decides the
        shares and broadcasts them; every rank then takes its rows under them. True if moved."""
        comm, size = self.comm, self.comm.size
        window = np.zeros(2 * size)
        window[comm.rank] = window_speed(self._window_rows, self._window_busy)
        window[size + comm.rank] = sum(self._window_busy)
        comm.reduce_sum_to_root(window)
        decision = self.balancer.observe(window[:size].tolist(), window[size:].tolist()) if comm.rank == 0 else None
        shares, used = comm.bcast_json(decision)
        if used:
            self._window_rows, self._window_busy = [], []
        if shares is None:
            return False
        self._apply(shares)
        return True

    def _apply(self, shares):
        t = time.perf_counter()
        self._take_shares(shares)
        self.shares = list(shares)
        self._moves += 1
        self._move_seconds += time.perf_counter() - t

    # ---- the epoch record ---------------------------------------------------------------------

    @property
    def n_slots(self):
        """Slots this adds to the epoch's max-reduction: each rank's busy seconds and row count."""
        return 2 * self.comm.size if self.per_rank else 0

    def fill_slots(self, slots, rows):
        """This rank's values in its own slots (zeros elsewhere; ``rows``: how many it owns
        now): a max over ranks gathers them."""
        if self.per_rank:
            size, rank = self.comm.size, self.comm.rank
            slots[rank] = self._busy_epoch
            slots[size + rank] = rows

    def epoch_fields(self, slots):
        """The epoch record's per-rank fields from the reduced slots."""
        if not self.per_rank:
            return {}
        size = self.comm.size
        counts = slots[size:]
        return {"rank_compute_seconds": slots[:size].tolist(), "shares": (counts / counts.sum()).tolist(),
                "row_moves": self._moves, "move_seconds": self._move_seconds}

    def start_epoch(self):
        """The next epoch's busy seconds and moves count from zero."""
        self._busy_epoch = 0.0
        self._moves, self._move_seconds = 0, 0.0

    # ---- checkpoints --------------------------------------------------------------------------

    def state(self):
        """The checkpoint's "balance" entry, or None without --balance dynamic."""
        if self.balancer is None:
            return None
        return {"ranks": self.comm.size, "shares": self.shares, "balancer": self.balancer.state()}

    def restore(self, saved):
        """Collective: resume from ``state()``; the shares apply again on the same rank count only
        (every rank read the same checkpoint, so all take the same rows)."""
        if self.balancer is not None and saved and saved["ranks"] == self.comm.size:
            self.balancer.load_state(saved["balancer"])
            if saved["shares"] is not None:
                self._apply(saved["shares"])
                self._moves, self._move_seconds = 0, 0.0  # not a move of this run's epochs
