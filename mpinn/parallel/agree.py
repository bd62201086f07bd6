"""Outcomes that happen on some ranks only, made every rank's outcome. No mpi4py here: the
collectives are the communicator's (comm.py).

Every place where something can happen on one rank alone (a file only rank 0 opens, scipy or
cv.split on rank 0, a write that fails, an exception in one rank's evaluation) goes through here:

- ``on_root(comm, fn)``: rank 0 runs ``fn``; every rank returns its JSON result, or raises the
  same exception type with the same message (rank 0 re-raises the original).
- ``agree(comm, error)``: every rank reports its exception or None; all raise the lowest failing
  rank's (that rank its own), or all go on.
- ``run_agreed(comm, fn)``: every rank runs ``fn``; any rank's exception is every rank's.
- ``collective_check(comm, message)``: any rank's complaint becomes the same InputError.
- ``share_random_state``: every rank continues rank 0's random generator.

Hot paths do not pay for a collective of their own: they carry a flag in the buffer they already
reduce (the step's stop flag, L-BFGS's error flag) and call ``agree`` only once a flag is up.
"""

from __future__ import annotations

import builtins
import sys

import numpy as np

from mpinn.errors import InputError, JobError


class RankError(JobError):
    """Another rank's exception whose type cannot be rebuilt here; the message names it."""


def describe(exc):
    """A JSON description of an exception: its class (module and name), message and args."""
    args = list(exc.args) if all(isinstance(a, (str, int, float, bool, type(None))) for a in exc.args) else [str(exc)]
    return {"module": type(exc).__module__, "name": type(exc).__qualname__, "message": str(exc), "args": args}


def rebuild(desc):
    """The exception ``describe`` described, of the same class when this process has it loaded
    (builtins, mpinn's, scikit-learn's ...), with the same args; else a RankError naming it."""
    module = builtins if desc["module"] == "builtins" else sys.modules.get(desc["module"])
    cls = module
    for part in desc["name"].split("."):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        for args in (desc["args"], [desc["message"]]):
            try:
                exc = cls(*args)
            except Exception:  # noqa: BLE001 - a constructor with other arguments: try the next form
                continue
            if str(exc) == desc["message"]:
                return exc
    return RankError(f"{desc['name']}: {desc['message']}")


def on_root(comm, fn, root=0):
    """Run ``fn`` on ``root`` only; every rank gets its JSON result, or raises its exception
    (any type, KeyboardInterrupt included: a signal on root stops every rank)."""
    result, error = None, None
    if comm.rank == root:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - forwarded to every rank, re-raised below
            error = exc
    ok, payload = comm.bcast_json([error is None, result if error is None else describe(error)], root=root)
    if ok:
        return payload
    if error is not None:
        raise error
    raise rebuild(payload)


def agree(comm, error=None):
    """Collective: every rank passes its exception (or None). If any rank failed, every rank
    raises the lowest failing rank's exception (that rank re-raises its own); else returns."""
    if comm.size == 1:
        if error is not None:
            raise error
        return
    flag = np.array([comm.rank if error is not None else comm.size], dtype=np.int64)
    comm.allreduce(flag, "min")
    first = int(flag[0])
    if first == comm.size:
        return
    desc = comm.bcast_json(describe(error) if comm.rank == first else None, root=first)
    if comm.rank == first:
        raise error
    raise rebuild(desc)


def run_agreed(comm, fn):
    """Every rank runs ``fn``; if it raises on any rank, every rank raises (see ``agree``)."""
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - made collective by agree
        agree(comm, exc)
        raise  # not reached: agree raised
    agree(comm, None)
    return result


def collective_check(comm, message):
    """Raise on every rank if any rank found a problem (its message, lowest rank first)."""
    message = comm.any_error(message)
    if message is not None:
        raise InputError(message)


def share_random_state(rs, comm):
    """Give every rank rank 0's RandomState state (random_state None or an instance)."""
    kind, key, pos, has_gauss, gauss = rs.get_state()
    key = np.array(key, dtype=np.uint32)
    comm.bcast_array(key)
    pos, has_gauss, gauss = comm.bcast_json([int(pos), int(has_gauss), float(gauss)])
    rs.set_state((kind, key, pos, has_gauss, gauss))
