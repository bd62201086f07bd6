"""scikit-learn's own successive halving tests, run against mpinn's HalvingGridSearchCV and
HalvingRandomSearchCV.

The file is the installed scikit-learn's sklearn/model_selection/tests/test_successive_halving.py,
taken at test time, with the two names of its scikit-learn import taken from mpinn instead, and
run by pytest inside this process (as tests/test_sklearn_mlp_suite.py runs test_mlp.py). Every
test passes; LEFT_OUT are not run, for time alone (under 1 s each for scikit-learn's classes,
10-20 s each here on a loaded 2-core machine: thousands of tiny fits, each one a task with
mpinn's per-task bookkeeping): test_aggressive_elimination's 8 cases and test_random_search's
largest. Aggressive elimination on and off is compared with scikit-learn's own search in
tests/test_halving.py.
"""

from pathlib import Path

import pytest

from test_sklearn_mlp_suite import Outcomes

LEFT_OUT = "not test_aggressive_elimination and not 512-exhaust-128"
NAMES = ("    HalvingGridSearchCV,\n", "    HalvingRandomSearchCV,\n")


def rewritten(tmp_path):
    sklearn = pytest.importorskip("sklearn")
    pytest.importorskip("pandas")
    source = Path(sklearn.__file__).parent / "model_selection" / "tests" / "test_successive_halving.py"
    if not source.exists():
        pytest.skip(f"{source} is not installed with scikit-learn")
    text = source.read_text()
    start = text.index("from sklearn.model_selection import (\n")
    block = text[start:text.index(")", start) + 1]
    assert all(name in block for name in NAMES), "test_successive_halving.py no longer imports the two classes so"
    ours = block
    for name in NAMES:
        ours = ours.replace(name, "")
    ours += "\nfrom mpinn import HalvingGridSearchCV, HalvingRandomSearchCV\n"
    path = tmp_path / "test_sklearn_halving_on_mpinn.py"
    path.write_text(text.replace(block, ours))
    return path


@pytest.mark.long
def test_sklearn_halving_tests_pass_on_mpinn(tmp_path):
    path = rewritten(tmp_path)
    outcomes = Outcomes()
    code = pytest.main([str(path), "-q", "-p", "no:cacheprovider", "--import-mode=importlib", "-o", "addopts=",
                        "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "basetemp"),
                        "-W", "ignore::DeprecationWarning", "-k", LEFT_OUT], plugins=[outcomes])
    assert outcomes.by_test, f"nothing ran (pytest exit code {code})"
    assert not outcomes.names("failed"), f"failing: {sorted(outcomes.names('failed'))}"
    passed = [key for key, (_, outcome) in outcomes.by_test.items() if outcome == "passed"]
    assert len(passed) >= 90, len(passed)  # 93 with scikit-learn 1.9
