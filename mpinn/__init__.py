"""mpinn: data-parallel MLP training with numpy on every MPI rank, data in HDF5.

Importing the package does not import mpi4py: the math and I/O modules run serially,
and MPI is initialised only when a communicator is first asked for (see parallel/comm.py).
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load", "abort_on_exception", "MLPClassifier", "MLPRegressor", "Preempted", "GridSearchCV",
           "RandomizedSearchCV", "HalvingGridSearchCV", "HalvingRandomSearchCV", "StandardScaler", "MinMaxScaler"]


def load(path):
    """Load a checkpoint (file or directory) written by mpinn: the fitted MLPClassifier or
    MLPRegressor it holds, whether an estimator or `mpinn train` wrote it."""
    from mpinn.estimators.loading import load as load_estimator

    return load_estimator(path)


def __getattr__(name):
    # The estimators are imported on first use, so `import mpinn` stays light.
    if name in ("MLPClassifier", "MLPRegressor"):
        from mpinn import estimators

        return getattr(estimators, name)
    if name == "Preempted":  # an estimator's fit stopped by SIGTERM/SIGUSR1 (docs/api.md)
        from mpinn.parallel.faults import Preempted

        return Preempted
    if name in ("GridSearchCV", "RandomizedSearchCV"):  # needs scikit-learn (docs/search.md)
        from mpinn.search import api

        return getattr(api, name)
    if name in ("HalvingGridSearchCV", "HalvingRandomSearchCV"):  # successive halving (docs/search.md)
        from mpinn.search import halving

        return getattr(halving, name)
    if name in ("StandardScaler", "MinMaxScaler"):  # statistics reduced across ranks (docs/api.md)
        from mpinn import preprocessing

        return getattr(preprocessing, name)
    raise AttributeError(f"module 'mpinn' has no attribute {name!r}")


def abort_on_exception():
    """Install an excepthook that ends every rank when any rank raises (see parallel/comm.py)."""
    from mpinn.parallel.comm import abort_on_exception as install

    install()
