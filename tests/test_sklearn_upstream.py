"""scikit-learn's own test files, run against lvmjax's drop-ins with the one import swapped.

The installed scikit-learn ships its tests. Each run copies ``sklearn/mixture/tests/
test_gaussian_mixture.py`` or ``sklearn/cluster/tests/test_k_means.py`` into a temporary folder,
rewrites ``from sklearn.mixture import GaussianMixture`` (``from sklearn.cluster import KMeans``)
to import lvmjax's estimator instead, and runs pytest on the copy in a fresh Python, with
scikit-learn's own conftest (its ``global_random_seed`` and ``global_dtype`` fixtures, its float32
skip). Everything else in the files (the data, the assertions, the other estimators such as
``MiniBatchKMeans``, scikit-learn's private helpers they test) stays scikit-learn's.

The default run takes a representative subset (``FAST``); the whole files run in the slow set
(``pytest -m slow``). Cases that cannot apply to a drop-in are deselected with their reason
(``CANNOT_APPLY``); every other case of the files must pass (or be skipped by scikit-learn's own
skip marks).
"""
from __future__ import annotations

import pathlib
import re
import sys
import xml.etree.ElementTree as ET

import pytest
import sklearn

from tests import processes

SKLEARN_DIR = pathlib.Path(sklearn.__file__).parent

FILES = {
    "mixture": ("mixture/tests/test_gaussian_mixture.py",
                "from sklearn.mixture import GaussianMixture\n",
                "from lvmjax.sklearn import GaussianMixture\n"),
    "cluster": ("cluster/tests/test_k_means.py",
                "from sklearn.cluster import KMeans, MiniBatchKMeans, k_means, kmeans_plusplus\n",
                "from sklearn.cluster import MiniBatchKMeans, k_means, kmeans_plusplus\n"
                "from lvmjax.sklearn import KMeans\n"),
    "bayesian_mixture": ("mixture/tests/test_bayesian_mixture.py",
                         "from sklearn.mixture import BayesianGaussianMixture\n",
                         "from lvmjax.sklearn import BayesianGaussianMixture\n"),
}
CLASSES = {"mixture": "GaussianMixture", "cluster": "KMeans",
           "bayesian_mixture": "BayesianGaussianMixture"}
# The whole files hold this many cases that must pass (a guard against a run that collected
# nothing).
MIN_PASSED = {"mixture": 50, "cluster": 50, "bayesian_mixture": 15}

# Cases that test scikit-learn's implementation rather than the estimator's behaviour, with the
# reason. (Tests of other estimators and of private helpers in the files are not deselected:
# they keep running on scikit-learn's code and pass.)
CANNOT_APPLY = {
    "mixture": {
        "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters":
            "counts the calls of scikit-learn's private _estimate_gaussian_parameters (mocked); "
            "lvmjax's M-step is its own compiled function, which the mock cannot see",
        "test_gaussian_mixture_precisions_init_diag":
            "pairs precisions computed from scikit-learn's KMeans(random_state=0) labels with the "
            "means of the drop-in's own k-means initialisation with random_state=0; the two "
            "random generators differ, so the components can come in another order and EM then "
            "needs another number of iterations (the precisions_init handling it checks is "
            "checked by test_gaussian_mixture_precisions_init)",
        "test_gaussian_mixture_array_api_compliance":
            "the array API dispatch (array_api_dispatch=True) of scikit-learn's NumPy code; "
            "lvmjax computes with JAX whatever the input namespace",
        "test_gaussian_mixture_raises_where_array_api_not_implemented":
            "expects NotImplementedError for inits scikit-learn's array-API code lacks; lvmjax "
            "implements every init",
    },
    "cluster": {},
    "bayesian_mixture": {},
}

# The default run: a representative case of each kind, as pytest -k expressions whose first word
# is the test's name. The GaussianMixture cases check error messages word for word (one printed
# with min and max swapped, as scikit-learn does) and the ill-defined-covariance error; the
# KMeans cases check dense and sparse CSR input, float32 and float64, "elkan" = "lloyd",
# integers, the verbose output, the errors and warnings. (Each distinct data shape and setting
# compiles, so the whole files take many minutes: they are in the slow set.)
FAST = {
    # BayesianGaussianMixture: the weights of both prior types, the mean prior's defaults and
    # the not-fitted error (the file's other cases run a dozen fits each: slow set).
    "bayesian_mixture": ["test_bayesian_mixture_weights", "test_bayesian_mixture_check_is_fitted",
                         "test_bayesian_mixture_mean_prior_initialisation"],
    "mixture": ["test_check_weights", "test_regularisation"],
    "cluster": [
        "test_kmeans_results", "test_integer_input and KMeans and dense and k-means",
        "test_kmeans_verbose and lloyd", "test_wrong_params and KMeans",
        "test_warning_elkan_1_cluster",
    ],
}


def _swapped_copy(name: str, folder: pathlib.Path) -> pathlib.Path:
  """scikit-learn's test file with the one import swapped, plus a pytest root of its own."""
  rel, old, new = FILES[name]
  source = (SKLEARN_DIR / rel).read_text()
  assert source.count(old) == 1, f"the import to swap is not in {rel} as expected: {old!r}"
  path = folder / f"test_upstream_{name}.py"
  path.write_text(source.replace(old, new))
  (folder / "pytest.ini").write_text("[pytest]\n")  # not the repository's options
  return path


def run_upstream(name: str, folder: pathlib.Path, only: list[str] | None = None) -> dict:
  """Runs the swapped file in a fresh Python; returns ``{test id: outcome}``.

  Outcomes are "passed", "failed", "error" or "skipped"; ``only`` keeps the tests that match one
  of these pytest ``-k`` expressions. The log's tail is under the key "__log__".
  """
  if not (SKLEARN_DIR / FILES[name][0]).exists():
    pytest.skip("this scikit-learn installation has no test files")
  path = _swapped_copy(name, folder)
  report = folder / f"{name}.xml"
  args = [sys.executable, "-m", "pytest", "-p", "sklearn.conftest", "-p", "no:cacheprovider",
          "-q", f"--junitxml={report}", "--rootdir", str(folder),
          str(path)]
  for test in CANNOT_APPLY[name]:
    args += ["--deselect", f"{path.name}::{test}"]
  if only:
    args += ["-k", " or ".join(f"({expr})" for expr in only)]
  env = processes.environment(drop=("SKLEARN_TESTS_GLOBAL_RANDOM_SEED",))
  out = processes.run(args, cwd=folder, env=env, timeout=3600, check=False)
  assert report.exists(), out.stdout[-3000:] + out.stderr[-3000:]
  outcomes = {}
  for case in ET.parse(report).getroot().iter("testcase"):
    kinds = {child.tag for child in case}
    outcome = ("failed" if "failure" in kinds else "error" if "error" in kinds else
               "skipped" if "skipped" in kinds else "passed")
    outcomes[case.get("name")] = outcome
  outcomes["__log__"] = out.stdout[-6000:]
  return outcomes


def _check(outcomes: dict, only: list[str] | None) -> None:
  log = outcomes.pop("__log__")
  bad = sorted(t for t, o in outcomes.items() if o in ("failed", "error"))
  assert not bad, f"{len(bad)} failing: {bad}\n{log}"
  ran = {re.sub(r"\[.*", "", t) for t, o in outcomes.items() if o == "passed"}
  if only:  # every selected test ran (a rename upstream would otherwise pass silently)
    names = {expr.split()[0] for expr in only}
    assert names <= ran, names - ran


@pytest.mark.parametrize("name", ["mixture", "cluster", "bayesian_mixture"])
def test_sklearn_test_file_subset(name, tmp_path):
  _check(run_upstream(name, tmp_path, FAST[name]), FAST[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixture", "cluster", "bayesian_mixture"])
def test_sklearn_test_file_whole(name, tmp_path):
  outcomes = run_upstream(name, tmp_path)
  assert sum(o == "passed" for o in outcomes.values()) > MIN_PASSED[name]
  _check(outcomes, None)


def test_swap_rewrites_the_import(tmp_path):
  """The copies import lvmjax's estimators (else the runs above would test scikit-learn's)."""
  for name in FILES:
    text = _swapped_copy(name, tmp_path).read_text()
    cls = CLASSES[name]
    assert f"from lvmjax.sklearn import {cls}\n" in text
    assert not re.search(rf"^from sklearn\.\w+ import .*\b{cls}\b", text, re.M)
