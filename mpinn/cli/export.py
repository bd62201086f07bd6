"""`mpinn export`: a checkpoint as npz, ONNX or a scikit-learn estimator."""

from __future__ import annotations

import os

from mpinn.cli.common import env_rank


def add_export_command(sub):
    p = sub.add_parser("export", help="export a checkpoint to npz, onnx or a scikit-learn estimator")
    p.add_argument("model", help="checkpoint file or checkpoint directory")
    p.add_argument("--format", required=True, choices=["npz", "onnx", "sklearn"])
    p.add_argument("-o", "--out", help="output file (default: in the current directory, the checkpoint "
                   "directory's or file's name with .npz/.onnx/.joblib)")
    p.set_defaults(func=cmd_export)


def cmd_export(args):
    from mpinn.estimators.export import export

    if env_rank() == 0:
        import mpinn

        model = mpinn.load(args.model)
        out = args.out or default_export_name(args.model, args.format)
        export(model, out, args.format)
        print(f"wrote {out} (from {_checkpoint_file(args.model)})")
    return 0


def default_export_name(model_path, fmt):
    """In the current directory, named after the checkpoint directory (or file): never inside
    the checkpoint directory, where pruning (--keep-checkpoints) would strand it."""
    name = os.path.basename(os.path.normpath(os.path.abspath(model_path)))
    if not os.path.isdir(model_path):
        name = os.path.splitext(name)[0]
    return name + {"npz": ".npz", "onnx": ".onnx", "sklearn": ".joblib"}[fmt]


def _checkpoint_file(path):
    from mpinn.train.checkpoint import resolve

    return resolve(path)
