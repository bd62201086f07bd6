"""Checkpoints: HDF5 arrays plus JSON attributes, written atomically by rank 0. No pickle.

Layout (docs/data-format.md):
    /coefs/0 .. /coefs/L-1          (fan_in, fan_out) weights, sklearn layout (for readers)
    /intercepts/0 .. /intercepts/L-1
    /state/params                   the flat parameter buffer [W0, b0, W1, b1, ...]
    /state/optimizer/<name>         optimizer arrays (velocity, or m and v)
    /state/schedule/order           the global training order of the current epoch (sklearn permutation)
    /state/rng/key                  MT19937 key of the shuffling RandomState
    /state/loss_curve               training loss per finished epoch
    /state/scaler/<kind>/<name>     `--scale` statistics (standard: mean_, var_, scale_,
                                    n_samples_seen_; minmax: data_min_, data_max_, data_range_,
                                    scale_, min_, n_samples_seen_), scikit-learn's attributes
    attrs: mpinn_format="mpinn-checkpoint", mpinn_format_version, mpinn_version,
           config (JSON), model (JSON: layer_sizes, activation, output, dtype, task, n_rows, split),
           classes (JSON), class_names (JSON), epoch, state (JSON scalars: step in epoch, RNG
           position, optimizer scalars, stopping counters, history), checksum (sha256);
           feature_names (JSON) and encoding (JSON) when the data named its columns

A directory holds ckpt-EEEEEE-SSSSSS.h5 files (epoch, step) and a file `latest` naming the
newest; the newest K are kept. Both the checkpoint and the pointer are replaced atomically,
so a kill at any moment leaves `latest` naming a complete, verifiable checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re

import numpy as np

from mpinn import __version__
from mpinn.atomic import check_writable_dir, fsync_dir, write_h5_atomic, write_text_atomic
from mpinn.errors import CheckpointError, InputError
from mpinn.parallel.agree import on_root
from mpinn.parallel.faults import take_write_fault
from mpinn.nn.fitted import FittedMLP

FORMAT = "mpinn-checkpoint"
FORMAT_VERSION = 1
LATEST = "latest"
# At least six digits each: past 10^6 steps in an epoch the name simply grows.
NAME = re.compile(r"^ckpt-(\d{6,})-(\d{6,})\.h5$")
# Attributes covered by the checksum, besides every array under /state.
_CHECKED_ATTRS = ("config", "model", "classes", "class_names", "state")
# ... and these when present: the data file's feature names and categorical encoding
# (checkpoints written before them have neither, and keep their checksum).
_OPTIONAL_ATTRS = ("feature_names", "encoding")


def _checksum(arrays, attrs):
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    for name in _CHECKED_ATTRS:
        h.update(f"{name}={attrs[name]}".encode())
    for name in _OPTIONAL_ATTRS:
        if name in attrs:
            h.update(f"{name}={attrs[name]}".encode())
    return h.hexdigest()


def training_split(cfg, problem):
    """The --test-fraction split of the data file, as `mpinn eval` redraws it
    (schedule.split_indices(n_rows, test_fraction, seed, permutation)); None without one."""
    if not getattr(cfg, "test_fraction", None):
        return None
    from mpinn.data.schedule import resolve_permutation

    n_rows = int(problem.shard.n_rows)
    return {"test_fraction": cfg.test_fraction, "seed": cfg.seed, "n_rows": n_rows,
            "permutation": resolve_permutation(getattr(cfg, "permutation", "auto"), n_rows)}


def recorded_split(attrs):
    """The split a checkpoint's training held out (read_checkpoint's attrs), or None.
    Checkpoints written before the split was recorded carry the same facts in config and model."""
    meta, cfg = attrs["model"], attrs["config"]
    if "split" in meta:
        return meta["split"]
    if cfg.get("test_fraction"):
        return {"test_fraction": cfg["test_fraction"], "seed": cfg["seed"], "n_rows": meta["n_rows"]}
    return None


def save_trainer(path, trainer, state):
    """Write everything needed to predict with, and to resume, a training run (rank 0).
    ``state`` is trainer.checkpoint_state(), which every rank computed together."""
    from mpinn.preprocessing.training import scaler_arrays

    model, problem = trainer.model, trainer.problem
    scalars, arrays = state
    arrays = {**arrays, **scaler_arrays(getattr(problem, "scaler", None))}  # checksummed with the state
    attrs = {
        "config": json.dumps(trainer.cfg.to_dict()),
        "model": json.dumps({"layer_sizes": model.layer_sizes, "activation": model.activation,
                             "output": model.output, "dtype": model.dtype.name, "task": problem.task,
                             "n_rows": int(problem.shard.n_rows), "split": training_split(trainer.cfg, problem)}),
        "classes": json.dumps(None if problem.classes is None else problem.classes.tolist()),
        "class_names": json.dumps(problem.class_names),
        "state": json.dumps(scalars),
    }
    for name in _OPTIONAL_ATTRS:
        if getattr(problem, name, None) is not None:
            attrs[name] = json.dumps(getattr(problem, name))
    checksum = _checksum(arrays, attrs)

    def fill(f):
        f.attrs["mpinn_format"] = FORMAT
        f.attrs["mpinn_format_version"] = FORMAT_VERSION
        f.attrs["mpinn_version"] = __version__
        f.attrs["epoch"] = trainer.epoch
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["checksum"] = checksum
        for i, (W, b) in enumerate(model.views(trainer.params)):
            f[f"coefs/{i}"] = W
            f[f"intercepts/{i}"] = b
        for name, arr in arrays.items():
            f[f"state/{name}"] = arr

    write_h5_atomic(path, fill)


class Checkpointer:
    """Rank 0 writes DIR/ckpt-EPOCH-STEP.h5, points DIR/latest at it, keeps the newest ``keep``."""

    def __init__(self, directory, comm, keep=3):
        self.directory, self.comm, self.keep = directory, comm, keep
        self.last_path = None

    def check_writable(self, fresh=False):
        """Called on rank 0 before training: a bad directory fails now, not after hours. The
        directory itself is made by the first save. ``fresh``: refuse a directory that already
        holds checkpoints, so two runs never mix in one (``--resume`` continues that run)."""
        if fresh and self.holds_checkpoints():
            raise InputError(f"--checkpoint: {self.directory} already holds another run's checkpoints; add --resume "
                             "to continue that run, or give a new folder")
        check_writable_dir(self.directory, "--checkpoint", create=False)

    def holds_checkpoints(self):
        try:
            names = os.listdir(self.directory)
        except OSError:
            return False
        return any(name == LATEST or NAME.match(name) for name in names)

    def save(self, trainer):
        path = os.path.join(self.directory, f"ckpt-{trainer.epoch:06d}-{trainer.step_in_epoch:06d}.h5")
        state = trainer.checkpoint_state()  # collective: a sharded optimizer state is gathered

        def write():
            try:
                self._write(path, trainer, state)
            except Exception as exc:  # noqa: BLE001 - any failure here is reported to every rank
                raise CheckpointError(f"checkpoint {path} could not be written ({type(exc).__name__}: {exc}); "
                                      f"the previous checkpoints in {self.directory} are intact") from None

        # Rank 0 alone writes: every rank learns the outcome here, so none waits alone in the
        # next collective (the estimators run without an abort handler).
        on_root(self.comm, write)
        self.last_path = path

    def _write(self, path, trainer, state):
        if take_write_fault():
            raise OSError(errno.ENOSPC, "No space left on device (injected by MPINN_FAULT)")
        os.makedirs(self.directory, exist_ok=True)
        save_trainer(path, trainer, state)
        fsync_dir(self.directory)  # the checkpoint's directory entry is durable before `latest` names it
        write_text_atomic(os.path.join(self.directory, LATEST), os.path.basename(path) + "\n")
        prune(self.directory, self.keep, os.path.basename(path))


def checkpoint_order(name):
    """Sort key of a checkpoint file name: (epoch, step) as numbers, not as text."""
    m = NAME.match(name)
    return int(m.group(1)), int(m.group(2))


def prune(directory, keep, current):
    """Delete all but the newest ``keep`` checkpoint files of ``directory`` (never ``current``)."""
    existing = sorted((n for n in os.listdir(directory) if NAME.match(n)), key=checkpoint_order)
    for old in existing[:-keep]:
        if old != current:
            os.unlink(os.path.join(directory, old))


def resolve(path):
    """A checkpoint file, or a checkpoint directory (the file its `latest` names)."""
    if os.path.isdir(path):
        pointer = os.path.join(path, LATEST)
        if not os.path.exists(pointer):
            raise InputError(f"{path}: no checkpoint in this directory (no '{LATEST}' file)")
        with open(pointer) as fh:
            name = fh.read().strip()
        # The pointer may only name a checkpoint file inside the directory.
        if not NAME.match(name):
            raise InputError(f"{pointer}: does not name a checkpoint file ({name[:60]!r})")
        path = os.path.join(path, name)
    return path


def read_checkpoint(path):
    """(attrs dict with JSON decoded, arrays dict) of a verified checkpoint; InputError otherwise."""
    import h5py

    path = resolve(path)
    if not os.path.exists(path):
        raise InputError(f"checkpoint not found: {path}")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path}: not an HDF5 file (truncated or not a checkpoint)")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("mpinn_format") != FORMAT:
                raise InputError(f"{path}: not an mpinn checkpoint")
            raw = {k: f.attrs[k] for k in _CHECKED_ATTRS}
            raw.update({k: f.attrs[k] for k in _OPTIONAL_ATTRS if k in f.attrs})
            stored = f.attrs["checksum"]
            arrays = {}
            f["state"].visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                                  if isinstance(obj, h5py.Dataset) else None)
    except InputError:
        raise
    except (KeyError, ValueError, OSError, TypeError) as exc:
        raise InputError(f"{path}: damaged or incomplete mpinn checkpoint ({exc})") from None
    if _checksum(arrays, raw) != stored:
        raise InputError(f"{path}: checksum mismatch, the checkpoint is damaged")
    try:
        attrs = {k: json.loads(v) for k, v in raw.items()}
    except ValueError as exc:
        raise InputError(f"{path}: damaged checkpoint metadata ({exc})") from None
    attrs["path"] = path
    return attrs, arrays


def load_model(path) -> FittedMLP:
    """A fitted model (sklearn-layout coefs_/intercepts_, predict) from a checkpoint."""
    return model_from_checkpoint(*read_checkpoint(path))


def model_arrays(arrays):
    """The arrays a fitted model is made of: parameters, loss curve, scaler statistics; not the
    optimizer's moments or the schedule's order, which only a resumed training needs."""
    return {name: a for name, a in arrays.items()
            if name in ("params", "loss_curve") or name.startswith("scaler/")}


def model_from_checkpoint(attrs, arrays) -> FittedMLP:
    """A fitted model from read_checkpoint's (attrs, arrays); ``arrays`` may be model_arrays'."""
    from mpinn.nn.model import MLP
    from mpinn.preprocessing.training import scaler_from_arrays

    meta = attrs["model"]
    model = MLP(meta["layer_sizes"], meta["activation"], meta["output"], dtype=meta["dtype"])
    params = arrays.get("params")
    if params is None or params.shape != (model.n_params,):
        raise InputError(f"{attrs['path']}: parameters do not match the stored architecture")
    views = model.views(params)
    return FittedMLP([W for W, _ in views], [b for _, b in views], activation=meta["activation"],
                     output=meta["output"], task=meta["task"], classes=attrs["classes"],
                     class_names=attrs["class_names"], config=attrs["config"],
                     history=attrs["state"]["history"], loss_curve=arrays["loss_curve"].tolist(),
                     scaler=scaler_from_arrays(arrays), feature_names=attrs.get("feature_names"),
                     encoding=attrs.get("encoding"))


def load_model_once(comm, path):
    """(FittedMLP, attrs) on every rank, the checkpoint read and verified once, by rank 0.

    Only the attributes and model_arrays are broadcast: other ranks may not see the file
    (node-local storage), 1,000 ranks reading and hashing it would load the file system, and
    the optimizer state and schedule order (up to 10^7 entries) are of no use to a prediction."""
    kept = {}

    def read():
        attrs, arrays = read_checkpoint(path)
        kept.update(model_arrays(arrays))
        model_from_checkpoint(attrs, kept)  # a bad checkpoint fails here, on rank 0, for all
        return attrs

    attrs = on_root(comm, read)
    arrays = comm.bcast_arrays(kept if comm.rank == 0 else None)
    return model_from_checkpoint(attrs, arrays), attrs
