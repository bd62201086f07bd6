"""`mpinn predict`: predictions of a checkpoint written to HDF5 (in rounds, see train/predict.py)."""

from __future__ import annotations

from mpinn.atomic import check_output_file
from mpinn.cli.common import load_on_all


def add_predict_command(sub):
    p = sub.add_parser("predict", help="write predictions of a checkpoint to HDF5")
    p.add_argument("--model", required=True, help="checkpoint file or checkpoint directory")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="output HDF5 file (datasets y_pred, and proba for classifiers)")
    p.add_argument("--x-name", default="X")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args):
    from mpinn.parallel.comm import world
    from mpinn.train.predict import predict_to_file
    from mpinn.parallel.agree import on_root

    comm = world()
    fitted, _ = load_on_all(comm, args.model)
    on_root(comm, lambda: check_output_file(args.out, "--out"))
    n = predict_to_file(fitted, args.data, args.x_name, args.out, comm)  # in rounds: see train/predict.py
    if comm.rank == 0:
        print(f"wrote {n} predictions to {args.out}")
    return 0
