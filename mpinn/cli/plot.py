"""PNG plots of training curves and confusion matrices (matplotlib, an optional extra)."""

from __future__ import annotations

import csv
import json

from mpinn.cli.common import env_rank
from mpinn.errors import InputError
from mpinn.train.logs import epoch_records


def require_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError("plotting needs matplotlib: pip install 'mpinn[plot]'") from None
    matplotlib.use("Agg")  # files only; no display needed on a cluster node
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path):
    """Per-epoch records from a metrics file written by `mpinn train --metrics` (JSONL or CSV)."""
    try:
        with open(path, newline="") as fh:
            if path.lower().endswith(".csv"):
                return [{k: float(v) if v != "" else None for k, v in row.items()} for row in csv.DictReader(fh)]
            return epoch_records(fh)
    except FileNotFoundError:
        raise InputError(f"metrics file not found: {path}") from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a metrics file written by mpinn train ({exc})") from None


def plot_metrics(path, out):
    """Loss, test (or validation) metric and samples/s per epoch, one panel each."""
    records = read_metrics(path)
    if not records or "loss" not in records[0]:
        raise InputError(f"{path}: no per-epoch records with a loss")
    plt = require_pyplot()
    epochs = [r["epoch"] for r in records]
    metric = next((k for k in ("test_accuracy", "test_r2", "validation_score") if k in records[0]), None)
    panels = [("loss", "training loss")] + ([(metric, metric.replace("_", " "))] if metric else []) \
        + [("samples_per_second", "samples/s")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), sharex=True)
    for ax, (key, label) in zip(axes, panels):
        ax.plot(epochs, [r.get(key) for r in records], lw=1.5)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log" if all(r["loss"] and r["loss"] > 0 for r in records) else "linear")
    axes[-1].set_xlabel("epoch")
    fig.suptitle(str(path), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_confusion(report, out):
    """The confusion matrix of an `mpinn eval` report, counts written in the cells."""
    plt = require_pyplot()
    cm = report["confusion"]
    labels = [str(c) for c in report["classes"]]
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * k, 1.0 + 0.6 * k))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(row) for row in cm) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, cm[i][j], ha="center", va="center", color="white" if cm[i][j] > top / 2 else "black")
    ax.set_title(f"accuracy {report['accuracy']:.4f}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def add_plot_command(sub):
    p = sub.add_parser("plot", help="plot a metrics file (loss, test metric, samples/s per epoch) to PNG")
    p.add_argument("metrics", help="JSONL or CSV written by `mpinn train --metrics`")
    p.add_argument("-o", "--out", default="curves.png", help="output PNG (default curves.png)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args):
    if env_rank() == 0:
        plot_metrics(args.metrics, args.out)
        print(f"wrote {args.out}")
    return 0
