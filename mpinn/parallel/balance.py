"""Dynamic load balancing: the row shares of the ranks from their measured speeds. No MPI here.

Every few steps each rank reports its speed over the last window of steps (the median over
steps of rows / busy seconds, robust to a step stretched by a context switch) and its busy
seconds; rank 0 feeds them to a ``Balancer``, which smooths each rank's speed (an exponential
moving average) and proposes shares proportional to the speeds. It
moves rows only when the proposal shortens the predicted step, max over ranks of share/speed,
by more than HYSTERESIS, judged on windows of at least MIN_WINDOW busy seconds: noise then
does not move rows, and after a move the measured times are about equal, so the next
proposal gains little and the shares stay (no oscillation).
Rank 0 broadcasts the decision; every rank applies the same shares (partition.make_shard).

The global batches do not depend on who owns a row, so the shares change only which rank
adds which rows: the model is the static run's up to the order of the cross-rank sums.

``MPINN_SLOW="RANK:FACTOR[;RANK:FACTOR...]"`` makes rank RANK sleep (FACTOR - 1) x its
measured compute time after each step's compute: a stand-in for a slower node (tests, bench).
"""

from __future__ import annotations

import math

from mpinn.errors import InputError

SLOW_ENV = "MPINN_SLOW"
HYSTERESIS = 0.10   # move rows only for a predicted step time more than 10% shorter
MIN_WINDOW = 0.02   # busy seconds (of the busiest rank) a decision rests on, at least
SMOOTHING = 0.5     # weight of the newest window in a rank's speed estimate
MIN_SHARE = 0.02    # x an equal share: every rank keeps some rows, so its speed stays measured
MAX_INTERVAL = 20   # steps between two looks at the measured speeds, at most


def parse_slow(text, size) -> dict:
    """{rank: factor} from MPINN_SLOW; empty when unset. A malformed value is an InputError."""
    out = {}
    for item in filter(None, (text or "").split(";")):
        rank, _, factor = item.partition(":")
        try:
            rank, factor = int(rank), float(factor)
        except ValueError:
            rank, factor = None, math.nan
        if rank is None or not math.isfinite(factor) or factor < 1:
            raise InputError(f"{SLOW_ENV}: expected RANK:FACTOR (an integer rank, a factor >= 1), got {item!r}")
        if not 0 <= rank < size:
            raise InputError(f"{SLOW_ENV}: rank {rank} does not exist in a job of {size} rank(s)")
        out[rank] = factor
    return out


def check_interval(n_steps: int) -> int:
    """Steps between two rebalancing checks: about four per epoch, at most MAX_INTERVAL."""
    return max(1, min(MAX_INTERVAL, n_steps // 4))


def predicted_step(shares, speeds) -> float:
    """The time of one global step of one row, set by the slowest rank: max share / speed."""
    return max(s / v for s, v in zip(shares, speeds))


def proportional_shares(speeds, min_share=MIN_SHARE) -> list:
    """Shares proportional to the speeds, each at least ``min_share`` of an equal share."""
    n = len(speeds)
    total = sum(speeds)
    shares = [max(v / total, min_share / n) for v in speeds]
    total = sum(shares)
    return [s / total for s in shares]


class Balancer:
    """Rank 0's record of the speeds and the shares it has decided."""

    def __init__(self, size, shares=None):
        self.size = size
        self.shares = list(shares) if shares is not None else [1.0 / size] * size
        self.speeds = None   # smoothed rows per second, per rank
        self.looks = 0       # windows reported; the first (warm-up steps) is dropped

    def observe(self, speeds, busy):
        """One window per rank: its speed (the median over its steps of rows / busy seconds,
        0 without rows) and its busy seconds. Returns (new shares or None, window used): a
        window is used once the busiest rank has MIN_WINDOW seconds in it, else the ranks keep
        filling it, so a decision rests on enough steps that timer noise does not move rows."""
        self.looks += 1
        if self.looks == 1:
            return None, True
        if max(busy) < MIN_WINDOW:
            return None, False
        if self.speeds is None:
            if not all(v > 0 for v in speeds):
                return None, True
            self.speeds = list(speeds)
        else:
            self.speeds = [old if new <= 0 else (1 - SMOOTHING) * old + SMOOTHING * new
                           for old, new in zip(self.speeds, speeds)]
        proposal = proportional_shares(self.speeds)
        gain = predicted_step(self.shares, self.speeds) / predicted_step(proposal, self.speeds) - 1
        if gain <= HYSTERESIS:
            return None, True
        self.shares = proposal
        return proposal, True

    def state(self):
        return {"shares": self.shares, "speeds": self.speeds}

    def load_state(self, state):
        """A saved state; the window restarts (and its first look is dropped again)."""
        self.shares = list(state["shares"])
        self.speeds = None if state["speeds"] is None else list(state["speeds"])
        self.looks = 0


def window_speed(rows, seconds) -> float:
    """A rank's speed over a window of steps: the median of rows / seconds over the steps in
    which it had rows (0 if none). The median shrugs off a step stretched by a context switch."""
    rates = [r / s for r, s in zip(rows, seconds) if r > 0 and s > 0]
    if not rates:
        return 0.0
    rates.sort()
    mid = len(rates) // 2
    return rates[mid] if len(rates) % 2 else 0.5 * (rates[mid - 1] + rates[mid])
