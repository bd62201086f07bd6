"""Outcomes that happen on some ranks only, made every rank's outcome. No mpi4py here: the
collectives are the communicator's (comm.py).

``decide_on_root`` runs a function on rank 0 and gives every rank its result or its error;
``collective_check`` turns any rank's complaint into the same InputError on every rank.
"""

from __future__ import annotations

from mpinn.errors import InputError


def decide_on_root(comm, fn):
    """Run ``fn`` on rank 0 only; every rank gets its JSON result or raises its InputError."""
    result, error = None, None
    if comm.rank == 0:
        try:
            result = fn()
        except InputError as exc:
            error = str(exc)
    ok, payload = comm.bcast_json([error is None, result if error is None else error])
    if not ok:
        raise InputError(payload)
    return payload


def collective_check(comm, message):
    """Raise on every rank if any rank found a problem (its message, lowest rank first)."""
    message = comm.any_error(message)
    if message is not None:
        raise InputError(message)
