"""Fixtures shared by the test modules."""

import pytest

from launch import run


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
