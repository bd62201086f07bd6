"""`mpinn train --config job.toml`: file values, flag overrides, unknown keys, --print-config."""

import json
import sys

import numpy as np
import pytest

import mpinn
from launch import run
from mpinn.train.checkpoint import read_checkpoint
from mpinn.train.config import TrainConfig, load_toml
from mpinn.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_toml_reproduces_the_flags_model(iris, tmp_path):
    flags = ["--hidden", "12,6", "--solver", "sgd", "--lr", "0.01", "--batch-size", "32", "--epochs", "25",
             "--no-nesterov", "--seed", "4", "--shard", "strided"]
    run(["train", "--data", iris, *flags, "--quiet", "--checkpoint", tmp_path / "a"], np_=2)
    (tmp_path / "job.toml").write_text(
        f'data = "{iris}"\nhidden = [12, 6]\nsolver = "sgd"\nlr = 0.01\nbatch-size = 32\nepochs = 25\n'
        'nesterov = false\nseed = 4\nshard = "strided"\nquiet = true\n')
    run(["train", "--config", tmp_path / "job.toml", "--checkpoint", tmp_path / "b"], np_=2)
    a, b = mpinn.load(tmp_path / "a"), mpinn.load(tmp_path / "b")
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(x, y)
    config_a = read_checkpoint(tmp_path / "a")[0]["config"]
    config_b = read_checkpoint(tmp_path / "b")[0]["config"]
    assert {**config_a, "checkpoint": None} == {**config_b, "checkpoint": None}


def test_flags_override_the_file_and_print_config_round_trips(iris, tmp_path):
    (tmp_path / "job.toml").write_text(f'data = "{iris}"\nhidden = [64, 32]\nepochs = 7\nlr = 0.5\n')
    out = run(["train", "--config", tmp_path / "job.toml", "--lr", "0.25", "--print-config"]).stdout
    resolved = tomllib.loads(out)
    assert resolved["hidden"] == [64, 32] and resolved["epochs"] == 7 and resolved["lr"] == 0.25
    assert resolved["solver"] == "adam"  # default filled in
    assert TrainConfig.from_dict(resolved).to_toml() == out  # the printed file is a valid --config


def test_resolved_config_is_written_next_to_metrics_and_first_in_them(iris, tmp_path):
    proc = run(["train", "--data", iris, "--hidden", "5", "--epochs", "2", "--metrics", tmp_path / "m.jsonl"])
    resolved = tomllib.loads((tmp_path / "m.config.toml").read_text())
    assert resolved["hidden"] == [5] and resolved["epochs"] == 2
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert first["ranks"] == 1 and TrainConfig.from_dict(first["config"]).to_toml() == (tmp_path / "m.config.toml").read_text()
    assert "resolved configuration" not in proc.stdout and "hidden = [5]" not in proc.stdout  # not by default


def test_verbose_prints_the_resolved_configuration(iris, tmp_path):
    out = run(["train", "--data", iris, "--hidden", "5", "--epochs", "1", "--verbose"]).stdout
    config = out.split("# resolved configuration\n", 1)[1].split("mpinn ", 1)[0]  # up to the start line
    assert config == TrainConfig.from_dict({"data": str(iris), "hidden": [5], "epochs": 1}).to_toml()


@pytest.mark.parametrize("text,message", [
    ("bogus = 1\nlearning_rate = 0.1\n", "unknown keys: bogus, learning_rate"),
    ("epochs = \"ten\"\n", "epochs: expected int, got 'ten'"),
    ("hidden = [10, \"x\"]\n", "hidden: expected a list of integers"),
    ("nesterov = 1\n", "nesterov: expected bool, got 1"),
    ("[model]\nhidden = [3]\n", "tables are not supported"),
    ("epochs = \n", "is not valid TOML"),
])
def test_bad_config_file_exit_2_naming_it(iris, tmp_path, text, message):
    (tmp_path / "job.toml").write_text(f'data = "{iris}"\n' + text)
    proc = run(["train", "--config", tmp_path / "job.toml"], np_=2, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_load_toml_accepts_dashes_and_underscores(tmp_path):
    (tmp_path / "a.toml").write_text("batch-size = 16\nn_iter_no_change = 3\nlog-every = 5\n")
    assert load_toml(tmp_path / "a.toml") == {"batch_size": 16, "n_iter_no_change": 3, "log_every": 5}
    with pytest.raises(InputError, match="file not found"):
        load_toml(tmp_path / "missing.toml")
