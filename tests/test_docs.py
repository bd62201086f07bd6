"""The documentation says what the code does.

- docs/cli.md has a table row for every option of every subcommand (walked from the argparse
  parser, nested `data` subcommands included), with the default the code uses, and no row
  for an option that does not exist.
- docs/data-format.md names every dataset and attribute of a real data file, checkpoint and
  predictions file (made by the quickstart's own commands).
- Every fenced block of every page (README.md, run/README.md, every docs/*.md) is executed or
  checked, in page order, in a temporary directory (holding `.venv`, `run/`, `bench/` and
  `examples/` as links to this checkout's), each command under a timeout. The fence language
  decides how:

  ``sh``          every command (continuation lines joined, comments dropped) runs with
                  `bash -c 'set -euo pipefail; ...'` and must exit 0; `mpiexec` is replaced by
                  the test launcher (MPINN_MPIEXEC, else the venv's mpiexec).
  ``python``      runs as `python -c BLOCK` and must exit 0.
  ``text``        every line was printed (stdout) by the blocks run since the previous ``text``
                  block; not compared when the blocks before it were only checked (below).
  ``sh-slow``     long or networked commands (make bench, pip installs, venvs), dry-run checked:
                  `make ...` must pass `make -n ...` in the checkout (and a `BENCH_FLAGS=` value
                  must be accepted by bench/run.py); `python bench/X.py ARGS` must pass
                  `--help` with every `--option` of ARGS named in that help; `mpinn ...` (also
                  after `mpiexec`, `mpirun`, `srun` or `timeout`) must parse with `mpinn.cli.app.build_parser()`;
                  `python3 -m venv DIR` is accepted; `pip install ...` must name valid
                  requirements, and `.[extras]` only extras that setup.cfg defines. Any other
                  command fails the test.
  ``sh-cluster``  scheduler/site-only lines. Comment lines are skipped, except `#SBATCH` /
                  `#PBS` lines. Every other line (continuations joined, whitespace collapsed,
                  a trailing ` # comment` dropped) must equal a line of run/slurm.sbatch,
                  run/pbs.sh or run/local.sh (which tests/test_run_scripts.py runs end to end),
                  or start with `module load`, `sbatch`, `qsub`, `srun` or `scontrol`; such a
                  line may name only scripts that exist, and `mpinn` arguments in it (after
                  `mpinn`, or after run/slurm.sbatch and run/local.sh NP, which pass them to
                  `mpinn train`) must parse with `build_parser()`.
  no language     diagrams and layouts only: no line may start like a command.

  Any other language (```bash, ```console, ```shell, ...) fails the test.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest

from mpinn.cli.app import build_parser
from mpinn.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ["README.md", "run/README.md"] + sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))
REQUIRED_PAGES = ["docs/index.md", "docs/quickstart.md", "docs/installation.md", "docs/data-format.md",
                  "docs/cli.md", "docs/api.md", "docs/clusters.md", "docs/design.md",
                  "docs/performance.md", "docs/reliability.md", "docs/faq.md"]
SCRIPTS = ["run/slurm.sbatch", "run/pbs.sh", "run/local.sh"]
LINKED = [".venv", "run", "bench", "examples"]  # made available in each page's temporary directory
BIN = Path(sys.executable).parent
TIMEOUT = 120
# `mpinn train` options that are not TrainConfig fields, and their defaults (cli_train.cmd_train).
TRAIN_CLI_DEFAULTS = {"config": None, "print_config": False, "json": False, "quiet": False, "log_every": 1,
                      "progress": "auto", "verbose": False, "mlflow": False, "elastic": False, "min_ranks": 1}


def read(rel):
    return (ROOT / rel).read_text()


@pytest.mark.parametrize("page", sorted(set(PAGES) | set(REQUIRED_PAGES)))
def test_page_exists(page):
    assert (ROOT / page).is_file() and read(page).strip()


@pytest.mark.parametrize("page", [p for p in PAGES if p != "docs/index.md"])
def test_index_links_every_page(page):
    target = page[len("docs/"):] if page.startswith("docs/") else f"../{page}"
    assert f"]({target})" in read("docs/index.md"), f"docs/index.md does not link {page}"


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
    from mpinn.cli import app as cli

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


FENCE = re.compile(r"^( *)```([^`\n]*)\n(.*?)^\1```[ \t]*$", re.S | re.M)
LANGUAGES = {"sh", "python", "text", "sh-slow", "sh-cluster", ""}
COMMAND_START = re.compile(r"^\s*(\$ |mpinn\b|mpiexec\b|make\b|python\d*\b|pip\d*\b|srun\b|sbatch\b|"
                           r"qsub\b|module\b|\. |source\b|run/)")


def blocks(page):
    """[(language, dedented body), ...] of every fenced block of a page, indented ones included."""
    return [(lang.strip(), textwrap.dedent(body)) for _, lang, body in FENCE.findall(read(page))]


def simple_commands(command):
    """A command line split at && || ; | into word lists, `# comments` dropped."""
    lex = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    parts, current = [], []
    for token in lex:
        if token and set(token) <= set(";&|"):
            parts.append(current)
            current = []
        else:
            current.append(token)
    parts.append(current)
    return [p for p in parts if p]


def without_assignments(words):
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    return words


def parse_mpinn(args, where):
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{where}: `mpinn {shlex.join(args)}` does not parse (exit {exc.code})")


def setup_cfg_extras():
    text = read("setup.cfg")
    section = text[text.index("[options.extras_require]"):].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.M))


def check_bench_args(script, args, where):
    proc = subprocess.run([sys.executable, str(ROOT / script), *args, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{where}: `{script} {shlex.join(args)}` rejected\n{proc.stderr}"
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] in proc.stdout, f"{where}: {script} has no option {arg}"


def check_pip(args, where):
    from packaging.requirements import Requirement

    assert args[:1] == ["install"], f"{where}: only `pip install` is allowed, got pip {shlex.join(args)}"
    args = args[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--no-binary", "--only-binary", "-r", "--index-url"):
            i += 2
            continue
        if arg in ("-e", "--editable"):
            i += 1
            arg = args[i]
        elif arg.startswith("-"):
            i += 1
            continue
        m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", arg)
        if m:
            unknown = set(filter(None, (m.group(1) or "").split(","))) - setup_cfg_extras()
            assert not unknown, f"{where}: extras {unknown} are not in setup.cfg"
        else:
            Requirement(arg)  # raises on an invalid requirement
        i += 1


def check_slow_command(words, where):
    words = without_assignments(words)
    name = Path(words[0]).name
    if name == "make":
        proc = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert proc.returncode == 0, f"{where}: `make -n {shlex.join(words[1:])}` failed\n{proc.stderr}"
        for word in words[1:]:
            if word.startswith("BENCH_FLAGS="):
                check_bench_args("bench/run.py", shlex.split(word.split("=", 1)[1]), where)
    elif re.fullmatch(r"python\d?(\.\d+)?", name) and words[1:3] == ["-m", "venv"]:
        assert len(words) == 4, f"{where}: `{shlex.join(words)}`: expected python3 -m venv DIR"
    elif re.fullmatch(r"python\d?(\.\d+)?", name) and words[1:2] and words[1].startswith("bench/"):
        check_bench_args(words[1], words[2:], where)
    elif re.fullmatch(r"pip\d?(\.\d+)?", name):
        check_pip(words[1:], where)
    elif "mpinn" in [Path(w).name for w in words]:
        at = [Path(w).name for w in words].index("mpinn")
        assert at == 0 or name in ("mpiexec", "mpirun", "srun", "timeout"), f"{where}: `{shlex.join(words)}`"
        parse_mpinn(words[at + 1:], where)
    else:
        pytest.fail(f"{where}: `{shlex.join(words)}` is not allowed in a sh-slow block (see tests/test_docs.py)")


def logical_lines(text, keep=lambda line: False):
    """Continuation lines joined, blank lines and comment lines dropped (unless keep(line))."""
    lines, pending = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line and (not line.startswith("#") or keep(line)):
            lines.append(line)
    return lines


def normalised(line):
    return " ".join(re.sub(r"\s+#\s.*$", "", line).split())


def script_lines():
    found = set()
    for script in SCRIPTS:
        found.update(normalised(l) for l in logical_lines(read(script), keep=lambda l: True))
    return found


def check_cluster_line(line, where):
    line = normalised(line)
    if line in script_lines():
        return
    words = line.split()
    assert words[0] in ("module", "sbatch", "qsub", "srun", "scontrol"), (
        f"{where}: sh-cluster line is neither a line of {', '.join(SCRIPTS)} nor a scheduler command: {line!r}")
    if words[0] == "module":
        assert words[1:2] == ["load"], f"{where}: only `module load` is allowed: {line!r}"
        return
    words = shlex.split(line)
    for i, word in enumerate(words):
        if "/" in word and not word.startswith("-") and "=" not in word and Path(word).suffix in (".sh", ".sbatch"):
            assert (ROOT / word).is_file(), f"{where}: {word} does not exist"
            rest = words[i + 1:]
            if word == "run/local.sh":
                rest = rest[1:]
            if word in ("run/slurm.sbatch", "run/local.sh"):
                parse_mpinn(["train", *rest], where)
            return
        if Path(word).name == "mpinn":
            parse_mpinn(words[i + 1:], where)
            return


def prepare(workdir):
    for name in LINKED:
        source = Path(sys.prefix) if name == ".venv" else ROOT / name
        link = Path(workdir) / name
        if source.exists() and not link.exists():
            link.symlink_to(source, target_is_directory=True)


def run_page(page, workdir):
    """Execute or check every fenced block of a page in order in ``workdir`` (the rules are in
    this module's docstring). Returns the number of sh/python blocks run plus sh-slow/sh-cluster
    blocks checked."""
    prepare(workdir)
    mpiexec = launcher()
    env = clean_env()
    done = 0
    output = ""
    for lang, block in blocks(page):
        where = f"{page}, ```{lang} block"
        assert lang in LANGUAGES, f"{page}: fence language {lang!r} is not allowed (use sh, sh-slow or sh-cluster)"
        if lang == "":
            bad = [l for l in block.splitlines() if COMMAND_START.match(l)]
            assert not bad, f"{page}: a block without language shows commands {bad}; fence it sh/sh-slow/sh-cluster"
            continue
        if lang == "text":
            if output is not None:
                for line in filter(None, (l.strip() for l in block.splitlines())):
                    assert line in output, f"{page}: expected output line not printed: {line!r}\n{output}"
            output = ""
            continue
        done += 1
        if lang == "sh-slow":
            for command in shell_commands(block):
                for words in simple_commands(command):
                    check_slow_command(words, where)
            output = None
        elif lang == "sh-cluster":
            lines = logical_lines(block, keep=lambda l: l.startswith(("#SBATCH", "#PBS")))
            assert lines, f"{where}: empty"
            for line in lines:
                check_cluster_line(line, where)
            output = None
        elif lang == "sh":
            for command in shell_commands(block):
                run = re.sub(r"(?<![\w./-])mpiexec(?![\w.-])", mpiexec, command)
                proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + run], cwd=workdir, env=env,
                                      capture_output=True, text=True, timeout=TIMEOUT)
                assert proc.returncode == 0, f"{page}: `{command}` exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
                output = (output or "") + proc.stdout
        else:
            proc = subprocess.run([sys.executable, "-c", block], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT)
            assert proc.returncode == 0, f"{page}: python block failed\n{block}\n{proc.stdout}\n{proc.stderr}"
            output = (output or "") + proc.stdout
    return done


def runnable(page):
    return sum(lang in ("sh", "python", "sh-slow", "sh-cluster") for lang, _ in blocks(page))


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """Every command of docs/quickstart.md, run in order; returns the directory they ran in."""
    workdir = tmp_path_factory.mktemp("quickstart")
    assert run_page("docs/quickstart.md", workdir) == runnable("docs/quickstart.md") >= 5
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


def test_data_format_blocks_run(quickstart):
    """Its example reads the checkpoint the quickstart wrote, so it runs in that directory."""
    assert run_page("docs/data-format.md", quickstart) == runnable("docs/data-format.md")


@pytest.mark.long  # ~25 s: its parity checks train on several rank counts; make test-long (CI) runs it
def test_design_md_blocks_run(tmp_path):
    pytest.importorskip("sklearn")  # the parity checks compare with scikit-learn (the test extra)
    assert run_page("docs/design.md", tmp_path) == runnable("docs/design.md") >= 5


def test_design_md_module_map_names_every_module():
    """Each module is named in the table of its own folder (one `### ... `mpinn/<folder>/`` section)."""
    text = read("docs/design.md")
    table = text[text.index("## Module map"):]
    sections = {}
    for part in table.split("\n### ")[1:]:
        heading = part.splitlines()[0]
        folder = heading[heading.index("`mpinn/") + 1:heading.rindex("`")] if "`mpinn/" in heading else None
        sections.setdefault(folder, "")
        sections[folder] += part
    modules = sorted((ROOT / "mpinn").rglob("*.py"))
    assert len(modules) > 50
    for path in modules:
        if path.name in ("__init__.py", "__main__.py"):
            continue
        folder = "mpinn/" + "".join(f"{p}/" for p in path.relative_to(ROOT / "mpinn").parent.parts)
        assert f"`{path.name}`" in sections.get(folder, ""), (
            f"docs/design.md module map does not name {folder}{path.name} under `{folder}`")


# ---- every other page's blocks ---------------------------------------------------------------

# Pages run by the tests above (in their own directories); every other page runs below.
RUN_ABOVE = {"docs/quickstart.md", "docs/design.md", "docs/data-format.md"}


# The two slowest pages (~20 s each: searches and fits under mpiexec) run in make test-long (CI).
SLOW_PAGES = {"docs/api.md", "docs/search.md"}


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.long) if p in SLOW_PAGES else p
                                  for p in PAGES if p not in RUN_ABOVE])
def test_page_blocks_run(page, tmp_path):
    assert run_page(page, tmp_path) == runnable(page)


@pytest.mark.parametrize("page", PAGES)
def test_page_fence_languages(page):
    for lang, _ in blocks(page):
        assert lang in LANGUAGES, f"{page}: fence language {lang!r} is not allowed (use sh, sh-slow or sh-cluster)"


def test_fences_are_all_found():
    """Every ``` line of every page opens or closes a block the tests see."""
    for page in PAGES:
        fences = len(re.findall(r"^ *```", read(page), re.M))
        assert fences == 2 * len(blocks(page)), f"{page}: unbalanced or unrecognised ``` fences"
