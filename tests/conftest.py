"""Fixtures shared by the test modules, and one pytest report per MPI job.

Under `mpiexec -n N python -m pytest --with-mpi`, every rank is a whole pytest session. Rank 0
reports as usual; the others run without pytest's terminal reporter (no header, dots, warnings
or summary: N copies of the same report hide the one that matters) and write only what went
wrong, each failure with its traceback on stderr, tagged with the rank. Rank 0's summary ends
with the other ranks' failures (gathered at the end of the session, a collective every rank
reaches). Each rank's exit status is still its own, so mpiexec fails when any rank fails.
"""

import os
import sys

import pytest

from launch import run


def _mpi_rank(config):
    if not config.getoption("--with-mpi", default=False):
        return 0
    from mpi4py import MPI

    return MPI.COMM_WORLD.rank


class OtherRankReport:
    """A rank > 0's report: its failures only, on stderr, each block written at once."""

    def __init__(self, rank):
        self.rank, self.failed, self.passed = rank, [], 0

    def _write(self, text):
        os.write(sys.stderr.fileno(), text.encode(errors="replace"))  # one write: blocks stay whole

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)
            self._write(f"\n[rank {self.rank}] FAILED ({report.when}) {report.nodeid}\n{report.longreprtext}\n")
        elif report.passed and report.when == "call":
            self.passed += 1

    def pytest_collectreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)
            self._write(f"\n[rank {self.rank}] ERROR collecting {report.nodeid}\n{report.longreprtext}\n")

    def pytest_sessionfinish(self, session, exitstatus):
        from mpi4py import MPI

        MPI.COMM_WORLD.gather(self.failed, root=0)  # rank 0's summary lists them


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Rank 0 under --with-mpi: a line naming the other ranks' failures, if any."""
    if not config.getoption("--with-mpi", default=False):
        return
    from mpi4py import MPI

    failed = MPI.COMM_WORLD.gather([], root=0)
    for rank, names in enumerate(failed):
        if names:
            terminalreporter.write_sep("=", f"rank {rank}: {len(names)} failed (traceback above): {', '.join(names)}",
                                       red=True)


@pytest.hookimpl(trylast=True)  # after the terminal reporter is registered
def pytest_configure(config):
    rank = _mpi_rank(config)
    if rank > 0:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            config.pluginmanager.unregister(reporter)
        config.pluginmanager.register(OtherRankReport(rank), "mpinn-other-rank-report")


@pytest.fixture(scope="session")
def iris(tmp_path_factory):
    """The built-in iris data, written once by `mpinn data iris` (tests only read it)."""
    path = tmp_path_factory.mktemp("data") / "iris.h5"
    run(["data", "iris", path])
    return path


@pytest.fixture
def world():
    """A duplicate of COMM_WORLD for one MPI test (freed after it), as mpi4py's own tests do."""
    MPI = pytest.importorskip("mpi4py.MPI")
    comm = MPI.COMM_WORLD.Dup()
    yield comm
    comm.Free()
