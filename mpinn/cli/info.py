"""`mpinn info`: versions, the MPI library and the ranks this launch gives."""

from __future__ import annotations

import os
import sys

from mpinn import __version__


def add_info_command(sub):
    p = sub.add_parser("info", help="versions, MPI library and ranks")
    p.set_defaults(func=cmd_info)


def cmd_info(args):
    import h5py
    import numpy as np

    from mpinn.parallel.comm import library_info, world

    comm = world()
    if comm.rank == 0:
        info = {"mpinn": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
                "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, **library_info(),
                "ranks": comm.size, "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0
