"""What rank 0 shows people: metrics files (JSONL, CSV), the terminal-only progress bar."""

import csv
import json

from launch import on_terminal, run


def test_csv_and_jsonl_metrics_hold_the_same_records(tmp_path):
    run(["data", "iris", tmp_path / "iris.h5"])
    common = ["train", "--data", tmp_path / "iris.h5", "--test-fraction", "0.2", "--hidden", "6", "--epochs", "4",
              "--quiet"]
    run([*common, "--metrics", tmp_path / "m.jsonl"])
    run([*common, "--metrics", tmp_path / "m.csv"])
    first, *records = [json.loads(line) for line in open(tmp_path / "m.jsonl")]
    assert first["config"]["hidden"] == [6] and first["ranks"] == 1  # the resolved configuration; CSV has none
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(records) == len(rows) == 4
    for rec, row in zip(records, rows):
        assert int(row["epoch"]) == rec["epoch"]
        assert float(row["loss"]) == rec["loss"]
        assert float(row["test_accuracy"]) == rec["test_accuracy"]


def test_progress_bar_only_on_a_terminal(tmp_path):
    run(["data", "synthetic", tmp_path / "s.h5", "--samples", "3000", "--features", "5"])
    args = ["train", "--data", tmp_path / "s.h5", "--hidden", "8", "--epochs", "2", "--batch-size", "50"]
    shown = on_terminal(args)
    assert "[####" in shown and "\r" in shown
    piped = run(args)
    assert "[#" not in piped.stdout and "\r" not in piped.stdout
    assert piped.stdout.count("epoch ") == 2
