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
    with AtomicH5(path) as f:
        fill(f)


class AtomicH5:
    """``write_h5_atomic`` for a file filled across many calls (`mpinn predict` writes it one
    round of rows at a time): ``open()`` creates the temporary file and returns it, ``close()``
    renames it over the target, ``discard()`` (or leaving a ``with`` block by an exception)
    removes it."""

    def __init__(self, path):
        self.path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.path))
        self.tmp = os.path.join(directory, f".{os.path.basename(self.path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        self.file = None

    def open(self):
        import h5py

        # Mode "x" creates with the ordinary umask permissions (mkstemp would give 0600).
        self.file = h5py.File(self.tmp, "x")
        return self.file

    def __enter__(self):
        return self.open()

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.discard()

    def discard(self):
        if self.file is not None:
            self.file.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def close(self):
        tmp, path = self.tmp, self.path
        try:
            self.file.close()
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
