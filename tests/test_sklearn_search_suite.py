"""scikit-learn's own search tests, run against mpinn's GridSearchCV and RandomizedSearchCV.

The file is the installed scikit-learn's sklearn/model_selection/tests/test_search.py, taken at
test time, with GridSearchCV and RandomizedSearchCV dropped from its import from
sklearn.model_selection and imported from mpinn instead (its Halving searches stay
scikit-learn's), and run by pytest inside this process, as tests/test_sklearn_mlp_suite.py runs
test_mlp.py. Every test must pass, except those docs/search.md lists ("scikit-learn's own
tests") as failing: the list stays exact. Skips are allowed only for the array API tests
(torch, cupy ... are not installed). Under mpiexec -n 2 (make test-2) both ranks run the same
tests in the same order, each search's tasks shared by the two ranks (groups of one rank); the
tests the page lists as "not under MPI" are left out there.
"""

import re
from pathlib import Path

import pytest

from test_sklearn_mlp_suite import Outcomes

ROOT = Path(__file__).resolve().parents[1]
SWAPPED = ("GridSearchCV", "RandomizedSearchCV")


def documented(kind):
    """Test names docs/search.md lists with ``kind`` ('fails' or 'not under MPI')."""
    text = (ROOT / "docs" / "search.md").read_text()
    section = text.split("## scikit-learn's own tests", 1)[1].split("\n## ", 1)[0]
    return {name for name, k in re.findall(r"^\| `(test_\w+)` \| ([^|]+?) \|", section, re.M) if k == kind}


def rewritten(tmp_path):
    sklearn = pytest.importorskip("sklearn")
    source = Path(sklearn.__file__).parent / "model_selection" / "tests" / "test_search.py"
    if not source.exists():
        pytest.skip(f"{source} is not installed with scikit-learn")
    text = source.read_text()
    block = re.search(r"^from sklearn\.model_selection import \((.*?)\)\n", text, re.S | re.M)
    assert block, "scikit-learn's test_search.py no longer imports from sklearn.model_selection in one block"
    names = block.group(1)
    for name in SWAPPED:
        assert names.count(f"    {name},\n") == 1, f"scikit-learn's test_search.py no longer imports {name} there"
        names = names.replace(f"    {name},\n", "")
    swapped = f"from sklearn.model_selection import ({names})\nfrom mpinn import {', '.join(SWAPPED)}\n"
    path = tmp_path / "test_sklearn_search_on_mpinn.py"
    path.write_text(text.replace(block.group(0), swapped))
    return path


def run_suite(tmp_path, leave_out=(), path=None):
    path = path or rewritten(tmp_path)
    outcomes = Outcomes()
    args = [str(path), "-q", "-p", "no:cacheprovider", "--import-mode=importlib", "-o", "addopts=",
            "--rootdir", str(path.parent), "--basetemp", str(tmp_path / "basetemp"), "-W", "ignore::DeprecationWarning"]
    if leave_out:
        args += ["-k", " and ".join(f"not {name}" for name in sorted(leave_out))]
    code = pytest.main(args, plugins=[outcomes])
    assert outcomes.by_test, f"nothing ran (pytest exit code {code})"
    return outcomes


def check(outcomes):
    failing = documented("fails")
    assert failing, "docs/search.md lists no scikit-learn test"
    assert outcomes.names("failed") == failing, (
        "scikit-learn search tests failing on mpinn must be exactly those docs/search.md lists; "
        f"failing {sorted(outcomes.names('failed'))}, listed {sorted(failing)}")
    other_skips = {k: r for k, r in outcomes.skip_reasons.items() if "array_api" not in r}
    assert not other_skips, f"skipped: {other_skips}"
    assert len(outcomes.names("passed")) >= 80  # distinct test functions (141 cases with their parameters)


@pytest.mark.long  # ~30 s serially; make test-2 runs the suite under MPI, make test-long (CI) this
def test_sklearn_search_tests_pass_on_mpinn(tmp_path):
    check(run_suite(tmp_path))


@pytest.mark.mpi(min_size=2)
def test_sklearn_search_tests_pass_on_mpinn_under_mpi(world, tmp_path):
    """Every rank runs the suite; each search is collective, so the ranks agree test by test."""
    if world.Get_size() != 2:
        pytest.skip("scikit-learn's search suite runs under mpiexec -n 2")
    # One copy of the file for both ranks (rank 0's), so the tracebacks of failing fits, which
    # name it, are the same text on every rank, as they are for a user's script.
    shared = Path(world.bcast(str(tmp_path) if world.Get_rank() == 0 else None))
    path = rewritten(shared) if world.Get_rank() == 0 else shared / "test_sklearn_search_on_mpinn.py"
    world.Barrier()
    outcomes = run_suite(tmp_path, leave_out=documented("not under MPI"), path=path)
    check(outcomes)
    seen = world.allgather(sorted((k, o) for k, (_, o) in outcomes.by_test.items()))
    assert all(s == seen[0] for s in seen)
