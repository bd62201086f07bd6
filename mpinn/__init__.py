"""mpinn: data-parallel MLP training with numpy on every MPI rank, data in HDF5.

Importing the package does not import mpi4py: the math and I/O modules run serially,
and MPI is initialised only when a communicator is first asked for (see comm.py).
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load", "abort_on_exception"]


def load(path):
    """Load a checkpoint written by mpinn and return a fitted model with predict()."""
    from .checkpoint import load_model

    return load_model(path)


def abort_on_exception():
    """Install an excepthook that ends every rank when any rank raises (see comm.py)."""
    from .comm import abort_on_exception as install

    install()
