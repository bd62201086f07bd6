"""Checkpoints: HDF5 arrays plus JSON attributes, written atomically by rank 0. No pickle.

Layout (docs/data-format.md):
    /coefs/0 .. /coefs/L-1          (fan_in, fan_out) weights, sklearn layout
    /intercepts/0 .. /intercepts/L-1
    /optimizer/<name>               optimizer arrays (velocity, or m and v)
    /schedule/order                 position of the global training order (resume)
    /rng/key                        MT19937 key of the shuffling RandomState
    /loss_curve                     training loss per epoch
    attrs: mpinn_format="mpinn-checkpoint", mpinn_format_version, mpinn_version, config (JSON),
           model (JSON: layer_sizes, activation, output, dtype, task), classes (JSON),
           class_names (JSON), epoch, t, optimizer (JSON scalars), rng (JSON: pos, gauss),
           history (JSON list of per-epoch records)
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from . import __version__
from .atomic import write_h5_atomic
from .errors import InputError
from .fitted import FittedMLP

FORMAT = "mpinn-checkpoint"
FORMAT_VERSION = 1
LATEST = "latest"


def save_trainer(path, trainer):
    """Write everything needed to predict with, and to resume, a training run."""
    model, problem = trainer.model, trainer.problem
    scalars, arrays = trainer.optimizer.state()
    kind, key, pos, has_gauss, gauss = trainer.random_state.get_state()

    def fill(f):
        f.attrs["mpinn_format"] = FORMAT
        f.attrs["mpinn_format_version"] = FORMAT_VERSION
        f.attrs["mpinn_version"] = __version__
        f.attrs["config"] = json.dumps(trainer.cfg.to_dict())
        f.attrs["model"] = json.dumps({"layer_sizes": model.layer_sizes, "activation": model.activation,
                                       "output": model.output, "dtype": model.dtype.name,
                                       "task": problem.task})
        f.attrs["classes"] = json.dumps(None if problem.classes is None else problem.classes.tolist())
        f.attrs["class_names"] = json.dumps(problem.class_names)
        f.attrs["epoch"] = trainer.epoch
        f.attrs["t"] = trainer.t
        f.attrs["optimizer"] = json.dumps({"solver": trainer.optimizer.name, **scalars})
        f.attrs["rng"] = json.dumps({"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)})
        f.attrs["history"] = json.dumps(trainer.history)
        for i, (W, b) in enumerate(model.views(trainer.params)):
            f[f"coefs/{i}"] = W
            f[f"intercepts/{i}"] = b
        for name, arr in arrays.items():
            f[f"optimizer/{name}"] = arr
        f["schedule/order"] = trainer.schedule.order
        f["rng/key"] = key
        f["loss_curve"] = np.asarray(trainer.loss_curve, dtype=np.float64)

    write_h5_atomic(path, fill)


class Checkpointer:
    """Rank 0 writes DIR/ckpt-EPOCH.h5 and points DIR/latest at it; keeps the newest ``keep``."""

    def __init__(self, directory, comm, keep=3):
        self.directory, self.comm, self.keep = directory, comm, keep
        self.last_path = None

    def check_writable(self):
        """Called on rank 0 before training: a bad directory fails now, not after hours."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-")
            probe.close()
        except OSError as exc:
            raise InputError(f"--checkpoint: directory {self.directory} is not writable ({exc.strerror})") from None

    def save(self, trainer):
        path = os.path.join(self.directory, f"ckpt-{trainer.epoch:06d}.h5")
        if self.comm.rank == 0:
            save_trainer(path, trainer)
            pointer = os.path.join(self.directory, LATEST)
            with tempfile.NamedTemporaryFile("w", dir=self.directory, prefix=".tmp-", delete=False) as fh:
                fh.write(os.path.basename(path) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(fh.name, pointer)
            existing = sorted(n for n in os.listdir(self.directory) if n.startswith("ckpt-") and n.endswith(".h5"))
            for old in existing[: -self.keep]:
                os.unlink(os.path.join(self.directory, old))
        self.last_path = path


def resolve(path):
    """A checkpoint file, or a checkpoint directory (its latest)."""
    if os.path.isdir(path):
        pointer = os.path.join(path, LATEST)
        if not os.path.exists(pointer):
            raise InputError(f"{path}: no checkpoint in this directory (no '{LATEST}' file)")
        with open(pointer) as fh:
            path = os.path.join(path, fh.read().strip())
    return path


def load_model(path) -> FittedMLP:
    """A fitted model (sklearn-layout coefs_/intercepts_, predict) from a checkpoint."""
    import h5py

    path = resolve(path)
    if not os.path.exists(path):
        raise InputError(f"checkpoint not found: {path}")
    if not h5py.is_hdf5(path):
        raise InputError(f"not an HDF5 file: {path}")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("mpinn_format") != FORMAT:
                raise InputError(f"{path}: not an mpinn checkpoint")
            meta = json.loads(f.attrs["model"])
            n = len(meta["layer_sizes"]) - 1
            coefs = [f[f"coefs/{i}"][()] for i in range(n)]
            intercepts = [f[f"intercepts/{i}"][()] for i in range(n)]
            classes = json.loads(f.attrs["classes"])
            class_names = json.loads(f.attrs["class_names"])
            config = json.loads(f.attrs["config"])
            history = json.loads(f.attrs["history"])
            loss_curve = f["loss_curve"][()].tolist()
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"{path}: damaged or incomplete mpinn checkpoint ({exc})") from None
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        if W.shape != (meta["layer_sizes"][i], meta["layer_sizes"][i + 1]) or b.shape != (meta["layer_sizes"][i + 1],):
            raise InputError(f"{path}: layer {i} arrays do not match the stored architecture")
    return FittedMLP(coefs, intercepts, activation=meta["activation"], output=meta["output"],
                     task=meta["task"], classes=classes, class_names=class_names,
                     config=config, history=history, loss_curve=loss_curve)
