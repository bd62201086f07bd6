"""Write a file so that readers see either the old file or the complete new one.

The file is built under a hidden unique name in the target directory (os.replace is atomic
only within one filesystem), flushed to disk, then renamed over the target. On any failure the
temporary file is removed and an existing file at the target is untouched. HDF5 files
(``write_h5_atomic``, ``AtomicH5``) and small text files (``write_text_atomic``: the checkpoint
pointer, the search's task log) go through here, as does the writable-output check.
"""

from __future__ import annotations

import os
import secrets

from mpinn.errors import InputError


def temporary_name(path):
    """A hidden, unique name beside ``path`` (same directory, hence the same filesystem)."""
    directory = os.path.dirname(os.path.abspath(path))
    return os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_dir(directory):
    """Make the directory's entries (a file just created or renamed into it) durable."""
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path, text):
    """Replace ``path`` by ``text``, durably: the file and then its directory entry are fsynced."""
    tmp = temporary_name(path)
    try:
        # Ordinary umask permissions (mkstemp would make the file 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_writable_dir(directory, what, create=True):
    """Prove a file can be made in ``directory`` (InputError if not): a bad directory fails
    before the work, not after hours of it. ``create=False`` leaves a missing directory
    uncreated (its nearest existing parent is probed instead), so a run that fails before its
    first write leaves nothing behind."""
    import tempfile

    probe = directory
    if not create:
        while probe and not os.path.isdir(probe) and not os.path.lexists(probe):
            parent = os.path.dirname(os.path.abspath(probe))
            probe = None if parent == os.path.abspath(probe) else parent
        if probe and not os.path.isdir(probe):
            raise InputError(f"{what}: {probe} is not a directory")
    try:
        if create:
            os.makedirs(directory, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=probe, prefix=".probe-").close()
    except OSError as exc:
        raise InputError(f"{what}: directory {directory} is not writable ({exc.strerror})") from None


def check_output_file(path, what):
    """InputError unless ``path`` names a file that can be created or replaced."""
    if os.path.isdir(path):
        raise InputError(f"{what}: {path} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise InputError(f"{what}: cannot write {path} (directory missing or not writable)")


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
        self.tmp = temporary_name(self.path)
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
