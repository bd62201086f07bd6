"""The documentation says what the code does.

- docs/cli.md has a table row for every option of every subcommand (walked from the argparse
  parser, nested `data` subcommands included), with the default the code uses, and no row
  for an option that does not exist.
- docs/data-format.md names every dataset and attribute of a real data file, checkpoint and
  predictions file (made by the quickstart's own commands).
- The shell commands (```sh blocks) and ```python blocks of docs/quickstart.md and
  docs/design.md run, in order, in a temporary directory, each under a timeout; every line of
  a ```text block is printed by the commands since the previous ```text block.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from mpinn.cli import build_parser
from mpinn.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ["README.md", "docs/quickstart.md", "docs/data-format.md", "docs/cli.md", "docs/design.md",
         "run/README.md"]
BIN = Path(sys.executable).parent
TIMEOUT = 120
# `mpinn train` options that are not TrainConfig fields, and their defaults (cli.cmd_train).
TRAIN_CLI_DEFAULTS = {"config": None, "print_config": False, "json": False, "quiet": False, "log_every": 1}


def read(rel):
    return (ROOT / rel).read_text()


@pytest.mark.parametrize("page", PAGES)
def test_page_exists(page):
    assert (ROOT / page).is_file() and read(page).strip()


def test_readme_names_the_two_quickstart_commands():
    text = read("README.md")
    assert "make run" in text and "make test" in text


def test_readme_summary_line_is_what_make_run_prints(tmp_path):
    """The training command of the Makefile's run target, run here, prints README's line."""
    recipe = re.search(r"^run:.*?\n((?:\t.*\n)+)", read("Makefile"), re.M).group(1)
    recipe = re.sub(r"\\\n\s*", " ", recipe)
    train = next(line for line in recipe.splitlines() if " train " in line)
    args = shlex.split(train.split(" train ", 1)[1].replace("$(OUT)", "out"))
    np_ = re.search(r"^NP\s*\?=\s*(\d+)", read("Makefile"), re.M).group(1)
    (tmp_path / "out").mkdir()
    env = clean_env()
    subprocess.run([str(BIN / "mpinn"), "data", "iris", "out/iris.h5"], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=TIMEOUT)
    proc = subprocess.run(shlex.split(launcher()) + ["-n", np_, str(BIN / "mpinn"), "train", *args, "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    done = next(line for line in proc.stdout.splitlines() if line.startswith("done:"))
    assert done in text_blocks(read("README.md")), f"README.md should show: {done}"


def text_blocks(text):
    return "\n".join(re.findall(r"^```text\n(.*?)^```", text, re.S | re.M))


# ---- docs/cli.md vs the argparse parser --------------------------------------------------


def subcommands(parser, prefix=()):
    """(('train',), parser), (('data', 'iris'), parser), ... for every leaf subcommand."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = subcommands(sub, prefix + (name,))
                found.extend(nested or [(prefix + (name,), sub)])
    return found


def documented_actions(parser):
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def default_of(command, action):
    """The default the code applies when the option is not given."""
    if action.required or not action.option_strings:
        return "required"
    if command == ("train",):  # argparse suppresses these; TrainConfig holds the defaults
        if action.dest in TRAIN_CLI_DEFAULTS:
            return TRAIN_CLI_DEFAULTS[action.dest]
        return TrainConfig.__dataclass_fields__[action.dest].default
    return action.default


def cell_matches(cell, default):
    cell = cell.strip()
    if default == "required":
        return cell == "required"
    if default is None:
        return cell == "—"
    if isinstance(default, bool):
        return cell == ("on" if default else "off")
    m = re.fullmatch(r"`([^`]*)`", cell)
    if not m:
        return False
    value = m.group(1)
    if isinstance(default, tuple):
        return value == ",".join(map(str, default))
    if isinstance(default, (int, float)):
        try:
            return float(value) == float(default)
        except ValueError:
            return False
    return value == str(default)


def cli_sections():
    """{('train',): [table rows as cell lists], ...} from the '## `mpinn ...`' sections."""
    sections, current = {}, None
    for line in read("docs/cli.md").splitlines():
        m = re.match(r"^##\s+`mpinn ([a-z ]+)`\s*$", line)
        if m:
            current = tuple(m.group(1).split())
            sections[current] = []
        elif line.startswith("#"):
            current = None
        elif current is not None and line.startswith("| `"):
            sections[current].append([c.strip() for c in line.strip().strip("|").split("|")])
    return sections


COMMANDS = subcommands(build_parser())


def test_cli_md_has_a_section_for_every_subcommand():
    sections = cli_sections()
    assert sorted(sections) == sorted(c for c, _ in COMMANDS)
    text = read("docs/cli.md")
    for command, _ in COMMANDS:
        assert f"mpinn {' '.join(command)}" in text


@pytest.mark.parametrize("command,parser", COMMANDS, ids=[" ".join(c) for c, _ in COMMANDS])
def test_cli_md_rows_match_the_parser(command, parser):
    rows = cli_sections()[command]
    by_name = {}
    for row in rows:
        names = re.findall(r"`(-{1,2}[\w-]+|[A-Za-z_]+)", row[0])
        for name in names:
            by_name[name] = row
    expected = set()
    for action in documented_actions(parser):
        names = action.option_strings or [action.dest]
        expected.update(names)
        for name in names:
            assert name in by_name, f"docs/cli.md, mpinn {' '.join(command)}: no row for {name}"
            row = by_name[name]
            default = default_of(command, action)
            assert len(row) >= 3 and cell_matches(row[1], default), (
                f"docs/cli.md, mpinn {' '.join(command)} {name}: default cell {row[1]!r}, code uses {default!r}")
    stale = set(by_name) - expected
    assert not stale, f"docs/cli.md, mpinn {' '.join(command)}: rows for options that do not exist: {stale}"


def test_cli_md_top_level_options():
    text = read("docs/cli.md")
    for action in documented_actions(build_parser()):
        for name in action.option_strings:
            assert f"`{name}`" in text


def test_cli_md_exit_codes():
    from mpinn import cli

    text = read("docs/cli.md")
    for code in (0, 1, cli.EXIT_INPUT, cli.EXIT_DIVERGED, getattr(cli, "EXIT_PREEMPTED", 0)):
        assert re.search(rf"^\|\s*`{code}`\s*\|", text, re.M), f"exit code {code} not in docs/cli.md's table"


# ---- docs/quickstart.md runs ---------------------------------------------------------------


def shell_commands(block):
    """Lines of a sh block, continuation lines joined, comments and blank lines dropped."""
    commands, pending = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def launcher():
    value = os.environ.get("MPINN_MPIEXEC", "").strip()
    if value:
        return value
    found = shutil.which("mpiexec", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip("no mpiexec (set MPINN_MPIEXEC)")
    return shlex.quote(found)


def clean_env():
    drop = ("PMI_", "PMIX_", "OMPI_", "PRTE_", "MPI_", "MPIR_", "HYDRA_", "SLURM_", "PBS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_page(page, workdir):
    """Run the ```sh and ```python blocks of a page in order in ``workdir``; each line of a
    ```text block must have been printed since the previous ```text block. Returns the count."""
    text = read(page)
    mpiexec = launcher()
    env = clean_env()
    ran = 0
    output = ""
    for lang, block in re.findall(r"^```(sh|python|text)\n(.*?)^```", text, re.S | re.M):
        if lang == "text":
            for line in filter(None, (l.strip() for l in block.splitlines())):
                assert line in output, f"{page}: expected output line not printed: {line!r}\n{output}"
            output = ""
            continue
        if lang == "sh":
            for command in shell_commands(block):
                run = re.sub(r"(?<![\w./-])mpiexec(?![\w.-])", mpiexec, command)
                proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + run], cwd=workdir, env=env,
                                      capture_output=True, text=True, timeout=TIMEOUT)
                assert proc.returncode == 0, f"{page}: `{command}` exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
                output += proc.stdout
                ran += 1
        else:
            proc = subprocess.run([sys.executable, "-c", block], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT)
            assert proc.returncode == 0, f"{page}: python block failed\n{block}\n{proc.stdout}\n{proc.stderr}"
            output += proc.stdout
            ran += 1
    return ran


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """Every command of docs/quickstart.md, run in order; returns the directory they ran in."""
    workdir = tmp_path_factory.mktemp("quickstart")
    assert run_page("docs/quickstart.md", workdir) >= 5
    return workdir


def test_quickstart_commands_run(quickstart):
    assert any(quickstart.iterdir())


def h5_names(path):
    """Dataset paths (numeric components as {i}) and attribute names of an HDF5 file."""
    datasets, attrs = set(), {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: datasets.add(re.sub(r"/\d+$", "/{i}", name))
                     if isinstance(obj, h5py.Dataset) else None)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return datasets, attrs


def assert_documented(path, what):
    text = read("docs/data-format.md")
    datasets, attrs = h5_names(path)
    for name in sorted(datasets):
        assert f"`/{name}`" in text, f"docs/data-format.md: {what} dataset /{name} is not documented"
    for name, value in sorted(attrs.items()):
        assert f"`{name}`" in text, f"docs/data-format.md: {what} attribute {name} is not documented"
        # config's keys are the `mpinn train` options, which docs/cli.md covers.
        if isinstance(value, str) and value.startswith("{") and name != "config":
            for key in json.loads(value):
                assert f"`{key}`" in text, f"docs/data-format.md: key {key} of {what} attribute {name} is not documented"


def files(directory, pattern):
    found = sorted(Path(directory).rglob(pattern))
    assert found, f"quickstart made no {pattern}"
    return found


def test_data_format_documents_the_data_file(quickstart):
    for path in files(quickstart, "*.h5"):
        with h5py.File(path, "r") as f:
            if f.attrs.get("mpinn_format") == "mpinn-data":
                assert_documented(path, "data file")


def test_data_format_documents_the_checkpoint(quickstart):
    checkpoints = files(quickstart, "ckpt-*.h5")
    assert_documented(checkpoints[-1], "checkpoint")


def test_data_format_documents_the_predictions(quickstart):
    for path in files(quickstart, "*.h5"):
        with h5py.File(path, "r") as f:
            if f.attrs.get("mpinn_format") == "mpinn-predictions":
                assert_documented(path, "predictions file")
                return
    pytest.fail("the quickstart writes no predictions file")


def test_data_format_python_blocks_run(quickstart):
    for block in re.findall(r"^```python\n(.*?)^```", read("docs/data-format.md"), re.S | re.M):
        proc = subprocess.run([sys.executable, "-c", block], cwd=quickstart, env=clean_env(),
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, f"docs/data-format.md python block failed\n{block}\n{proc.stderr}"


def test_design_md_blocks_run(tmp_path):
    pytest.importorskip("sklearn")  # the parity checks compare with scikit-learn (the test extra)
    assert run_page("docs/design.md", tmp_path) >= 5


def test_design_md_module_map_names_every_module():
    text = read("docs/design.md")
    table = text[text.index("## Module map"):]
    for path in sorted((ROOT / "mpinn").glob("*.py")):
        if path.name != "__init__.py":
            assert f"`{path.name}`" in table, f"docs/design.md module map does not name mpinn/{path.name}"
