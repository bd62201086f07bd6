"""Write an HDF5 file so that readers see either the old file or the complete new one.

The file is built under a hidden unique name in the target directory (os.replace is atomic
only within one filesystem), flushed to disk, then renamed over the target. On any failure the
temporary file is removed and an existing file at the target is untouched.
"""

from __future__ import annotations

import os
import secrets


def write_h5_atomic(path, fill):
    """Create ``path`` by calling ``fill(h5py.File)`` on a temporary file, then renaming it."""
    import h5py

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # Mode "x" creates with the ordinary umask permissions (mkstemp would give 0600).
        with h5py.File(tmp, "x") as f:
            fill(f)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
