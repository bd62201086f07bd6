"""`mpinn data iris|synthetic|digits|diabetes|info|split|convert`: making and converting data files.

Rank 0 alone does the work (under mpiexec the other ranks return at once); the datasets
themselves are mpinn.data.builtin. Registered on the `mpinn` parser by app.build_parser.
"""

from __future__ import annotations

import json

from mpinn.cli.common import Parser, print_report, env_rank


def add_data_commands(sub):
    """The `data` subcommand and its own subcommands, on app.build_parser's subparsers."""
    data = sub.add_parser("data", help="make or convert datasets").add_subparsers(
        dest="data_command", required=True, parser_class=Parser)
    p = data.add_parser("iris", help="write the built-in iris data (150 x 4, 3 classes)")
    p.add_argument("out")
    p.set_defaults(func=cmd_data_iris)
    p = data.add_parser("synthetic", help="write a synthetic classification or regression set")
    p.add_argument("out")
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--task", default="classify", choices=["classify", "regress"])
    p.add_argument("--outputs", type=int, default=1, help="regression outputs (default 1)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_synthetic)
    p = data.add_parser("digits", help="write scikit-learn's digits data (1797 x 64, 10 classes; needs sklearn)")
    p.add_argument("out")
    p.set_defaults(func=cmd_data_digits)
    p = data.add_parser("diabetes", help="write scikit-learn's diabetes data (442 x 10, a regression target; "
                                          "needs sklearn)")
    p.add_argument("out")
    p.set_defaults(func=cmd_data_diabetes)
    p = data.add_parser("info", help="shapes, dtypes, chunks, class balance and NaN count of a data file")
    p.add_argument("file")
    p.add_argument("--x-name", default="X")
    p.add_argument("--y-name", default="y")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_data_info)
    p = data.add_parser("split", help="split a data file into train and test files (stratified, seeded)")
    p.add_argument("file")
    p.add_argument("train_out")
    p.add_argument("test_out")
    p.add_argument("--test-fraction", type=float, default=0.2, help="(default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stratify", action="store_true", help="plain random split even for class labels")
    p.set_defaults(func=cmd_data_split)
    p = data.add_parser("convert", help="CSV, Parquet, NPY or NPZ to mpinn's HDF5 layout")
    p.add_argument("input")
    p.add_argument("out")
    p.add_argument("--label-column", help="label column name or index (default: last)")
    p.add_argument("--no-label", action="store_true",
                   help="every column is a feature, the file has no labels (rows to predict on)")
    p.add_argument("--task", choices=["classify", "regress"],
                   help="stored in the file: `mpinn train --task auto` follows it")
    p.add_argument("--chunk-rows", type=int)
    p.add_argument("--na", choices=["fail", "drop"], default="fail",
                   help="rows with a missing value: fail naming the line (default) or drop them")
    p.add_argument("--features", help="CSV: feature columns to keep, names or 0-based indices, comma-separated")
    p.add_argument("--drop", help="CSV: columns to leave out, names or 0-based indices, comma-separated")
    p.add_argument("--delimiter", default=",", help="CSV: field separator, one character (default ','; 'tab' for tabs)")
    p.add_argument("--categorical", default="auto",
                   help="CSV/Parquet: columns to one-hot encode: auto (default: every text column), none, "
                        "or names / 0-based indices, comma-separated")
    p.add_argument("--unknown-category", choices=["error", "zeros"], default="error",
                   help="a category the model never saw, at eval/predict: error (default) or all-zero indicators")
    p.set_defaults(func=cmd_data_convert)


def cmd_data_iris(args):
    from mpinn.data.builtin import load_iris, write_hdf5

    if env_rank() == 0:
        X, y, features, classes = load_iris()
        write_hdf5(args.out, X, y, class_names=list(classes), feature_names=list(features))
        print(f"wrote {args.out}: iris, {X.shape[0]} rows x {X.shape[1]} features, {len(classes)} classes")
    return 0


def cmd_data_synthetic(args):
    from mpinn.data.builtin import make_synthetic, write_hdf5

    if env_rank() == 0:
        X, y = make_synthetic(args.samples, args.features, args.classes, task=args.task,
                              n_outputs=args.outputs, seed=args.seed)
        write_hdf5(args.out, X.astype(args.dtype), y)
        print(f"wrote {args.out}: {X.shape[0]} rows x {X.shape[1]} features, {args.task}")
    return 0


def cmd_data_digits(args):
    from mpinn.data.builtin import load_digits, write_hdf5

    if env_rank() == 0:
        X, y, names = load_digits()
        write_hdf5(args.out, X, y, class_names=names)
        print(f"wrote {args.out}: digits, {X.shape[0]} rows x {X.shape[1]} features, 10 classes")
    return 0


def cmd_data_diabetes(args):
    from mpinn.data.builtin import load_diabetes, write_hdf5

    if env_rank() == 0:
        X, y, names = load_diabetes()
        # The target is integral-valued: the stored task keeps --task auto from classifying it.
        write_hdf5(args.out, X, y, feature_names=names, attrs={"task": "regress"})
        print(f"wrote {args.out}: diabetes, {X.shape[0]} rows x {X.shape[1]} features, regress")
    return 0


def cmd_data_info(args):
    from mpinn.data.convert import info

    if env_rank() == 0:
        print_report(info(args.file, x_name=args.x_name, y_name=args.y_name), args.json)
    return 0


def cmd_data_split(args):
    from mpinn.data.convert import split

    if env_rank() == 0:
        counts = split(args.file, args.train_out, args.test_out, test_fraction=args.test_fraction,
                       seed=args.seed, stratify=not args.no_stratify)
        print(f"wrote {args.train_out} ({counts['train_rows']} rows) and {args.test_out} ({counts['test_rows']} rows)")
    return 0


def cmd_data_convert(args):
    from mpinn.data.convert import convert

    if env_rank() == 0:
        label = args.label_column
        if label is not None and label.lstrip("-").isdigit():
            label = int(label)
        summary = convert(args.input, args.out, label_column=label, chunk_rows=args.chunk_rows, task=args.task,
                          na=args.na, features=args.features, drop=args.drop, delimiter=args.delimiter,
                          categorical=args.categorical, no_label=args.no_label,
                          unknown_category=args.unknown_category)
        for note in summary.pop("notes", []):
            print(f"note: {note}")
        print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0
