"""The package's import graph (function-level imports included) follows its layers.

Each subpackage may import only from the layers before it in LAYERS (and from its own layer);
no module may take part in an import circle; mpi4py is imported by parallel/comm.py alone.
`python tests/test_layers.py PKGDIR` prints the violations of any checkout's package.
"""

import ast
import os
import sys

# Lowest first. The package's own __init__ (`import mpinn`, lazy public names) and __main__
# sit on top; every other module must belong to exactly one layer.
LAYERS = [
    ("mpinn.errors", "mpinn.atomic", "mpinn.options"),
    ("mpinn.nn",),
    ("mpinn.data",),
    ("mpinn.parallel",),
    ("mpinn.preprocessing",),
    ("mpinn.train",),
    ("mpinn.estimators",),
    ("mpinn.search",),
    ("mpinn.cli",),
    ("mpinn", "mpinn.__main__"),
]
MPI_OWNER = "mpinn.parallel.comm"
PKG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mpinn")


def modules(pkg_dir):
    """{dotted module name: file path} of every .py file under ``pkg_dir``."""
    base = os.path.dirname(pkg_dir)
    found = {}
    for folder, _, files in os.walk(pkg_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports(mods):
    """{module: {(imported module, line)}}: every import statement, at any depth of the code."""
    edges = {}
    for mod, path in mods.items():
        package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                found |= {(alias.name, node.lineno) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    source = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    source = node.module
                found.add((source, node.lineno))
                # `from pkg import submodule` imports the submodule
                found |= {(f"{source}.{alias.name}", node.lineno) for alias in node.names
                          if f"{source}.{alias.name}" in mods}
        edges[mod] = found
    return edges


def layer_of(mod):
    best = None
    for index, members in enumerate(LAYERS):
        for member in members:
            if (mod == member or (member != "mpinn" and mod.startswith(member + "."))) and \
                    (best is None or len(member) > len(best[1])):
                best = (index, member)
    return None if best is None else best[0]


def circles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(pkg_dir=PKG_DIR):
    mods = modules(pkg_dir)
    edges = imports(mods)
    problems = []
    graph = {mod: set() for mod in mods}
    for mod, found in sorted(edges.items()):
        mine = layer_of(mod)
        if mine is None:
            problems.append(f"{mod}: in no layer")
        for target, line in sorted(found):
            top = target.split(".")[0]
            if top == "mpi4py" and mod != MPI_OWNER:
                problems.append(f"{mod}:{line} imports mpi4py (only {MPI_OWNER} may)")
            if top != "mpinn" or target not in mods or target == mod:
                continue
            if target == "mpinn":  # the package facade: only its version string may be imported from below
                continue
            if mod.startswith(target + ".") and mods[target].endswith("__init__.py"):
                continue  # a module of a package runs that package's __init__ anyway
            graph[mod].add(target)
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(f"{mod}:{line} imports {target}, a higher layer")
    for component in circles(graph):
        problems.append("circle: " + " -> ".join(component))
    return problems


def facade_imports(pkg_dir=PKG_DIR):
    """Names that modules below the CLI import from the package facade `mpinn` itself."""
    names = set()
    for mod, path in modules(pkg_dir).items():
        if layer_of(mod) is not None and layer_of(mod) < len(LAYERS) - 2:
            for node in ast.walk(ast.parse(open(path).read(), path)):
                if isinstance(node, ast.ImportFrom) and node.module == "mpinn" and not node.level:
                    names |= {alias.name for alias in node.names}
                if isinstance(node, ast.Import) and any(alias.name == "mpinn" for alias in node.names):
                    names.add(f"import mpinn ({mod})")
    return names


def test_imports_follow_the_layers_without_circles():
    assert violations() == []


def test_only_the_version_comes_from_the_package_facade():
    assert facade_imports() <= {"__version__"}


def test_violations_are_found():
    """The checker itself: an upward import, a circle and an MPI import outside comm are reported."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pkg = os.path.join(tmp, "mpinn")
        for sub in ("nn", "train", "data"):
            os.makedirs(os.path.join(pkg, sub))
            open(os.path.join(pkg, sub, "__init__.py"), "w").close()
        open(os.path.join(pkg, "__init__.py"), "w").close()
        with open(os.path.join(pkg, "nn", "model.py"), "w") as f:
            f.write("def f():\n    from mpinn.train import loop\n")
        with open(os.path.join(pkg, "train", "loop.py"), "w") as f:
            f.write("from mpinn.nn.model import f\n")
        with open(os.path.join(pkg, "data", "hdf5.py"), "w") as f:
            f.write("from mpi4py import MPI\n")
        with open(os.path.join(pkg, "stray.py"), "w") as f:
            f.write("")
        found = violations(pkg)
    assert "mpinn.nn.model:2 imports mpinn.train.loop, a higher layer" in found
    assert "circle: mpinn.nn.model -> mpinn.train.loop" in found
    assert "mpinn.data.hdf5:1 imports mpi4py (only mpinn.parallel.comm may)" in found
    assert "mpinn.stray: in no layer" in found


if __name__ == "__main__":
    found = violations(os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else PKG_DIR)
    print("\n".join(found) or "no violations")
    sys.exit(1 if found else 0)


# Calls that end the process. Library code raises on every rank instead (parallel/agree.py);
# only the CLI chooses exit codes and aborts. parallel/comm.py keeps the abort the CLI calls and
# the opt-in excepthook (mpinn.abort_on_exception); the fault injector exits on purpose.
ENDERS = {("sys", "exit"), ("os", "_exit"), (None, "abort"), (None, "Abort")}
MAY_END = ("mpinn.cli", "mpinn.__main__", "mpinn.parallel.comm", "mpinn.parallel.faults")


def process_enders(pkg_dir=PKG_DIR):
    found = []
    for mod, path in sorted(modules(pkg_dir).items()):
        if any(mod == allowed or mod.startswith(allowed + ".") for allowed in MAY_END):
            continue
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Raise) and isinstance(node.exc, (ast.Call, ast.Name)):
                name = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(name, ast.Name) and name.id == "SystemExit":
                    found.append(f"{mod}:{node.lineno} raise SystemExit")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
                if (owner, node.func.attr) in ENDERS or (None, node.func.attr) in ENDERS:
                    found.append(f"{mod}:{node.lineno} {owner or '...'}.{node.func.attr}()")
    return sorted(found)


def test_library_code_never_ends_the_process():
    assert process_enders() == []


def test_process_enders_are_found():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pkg = os.path.join(tmp, "mpinn")
        os.makedirs(os.path.join(pkg, "search"))
        open(os.path.join(pkg, "__init__.py"), "w").close()
        with open(os.path.join(pkg, "search", "api.py"), "w") as f:
            f.write("import os, sys\ndef f(team):\n    team.world.abort(1)\n    sys.exit(2)\n    os._exit(3)\n"
                    "    raise SystemExit(4)\n")
        assert process_enders(pkg) == ["mpinn.search.api:3 ....abort()", "mpinn.search.api:4 sys.exit()",
                                       "mpinn.search.api:5 os._exit()", "mpinn.search.api:6 raise SystemExit"]
