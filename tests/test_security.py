"""Nothing mpinn reads can run code: a scan of the package source (AST, not grep)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mpinn"
SOURCES = sorted(PACKAGE.rglob("*.py"))
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            yield node, owner, name


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_no_unpickling_eval_or_exec(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & FORBIDDEN_MODULES, (path.name, node.lineno)
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in FORBIDDEN_MODULES, (path.name, node.lineno)
    for node, owner, name in _calls(tree):
        where = f"{path.name}:{node.lineno}"
        assert not (owner is None and name in FORBIDDEN_CALLS), f"{where}: {name}()"
        assert not (owner == "joblib" and name == "load"), f"{where}: joblib.load unpickles"
        if owner == "np" and name == "load":
            flags = {k.arg: k.value for k in node.keywords}
            assert isinstance(flags.get("allow_pickle"), ast.Constant) and flags["allow_pickle"].value is False, (
                f"{where}: np.load without allow_pickle=False")


def test_the_scan_sees_every_module():
    assert len(SOURCES) > 20 and any(p.name == "checkpoint.py" for p in SOURCES)
