"""Tests of lvmjax.sklearn: scikit-learn's estimator checks, and equality with scikit-learn's own
GaussianMixture, KMeans and PCA (float64) from the same initial parameters."""
import pickle
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import cluster as sk_cluster
from sklearn import decomposition as sk_decomposition
from sklearn import mixture as sk_mixture
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from lvmjax import gmm
from lvmjax.sklearn import PPCA, GaussianMixture, KMeans

COV_TYPES = ("full", "tied", "diag", "spherical")

# ----------------------------------------------------------------------------------------------
# scikit-learn's estimator checks.

# The instances: small max_iter and two restarts, as scikit-learn's own test suite configures
# its GaussianMixture and KMeans for these checks.
CHECKED = [GaussianMixture(n_init=2, max_iter=5), KMeans(n_clusters=2, n_init=2, max_iter=5),
           PPCA()]


def expected_failed_checks(estimator):
  """Checks that cannot pass, with the reason (the same entry scikit-learn lists for KMeans)."""
  if isinstance(estimator, KMeans):
    return {
        f"check_sample_weight_equivalence_on_{kind}_data": (
            "Seeding draws depend on the number of rows: repeating a row moves the k-means++ "
            "draws, so the clustering found differs (scikit-learn expects the same failure for "
            "its KMeans, on dense and on sparse data).")
        for kind in ("dense", "sparse")
    }
  return {}


# Every distinct data shape compiles the fit (seconds each), so the default run keeps a
# representative subset: the API checks (cloning, parameters, tags, repr, unfitted errors),
# input validation (sparse, complex, empty, 1-D, all-zero weights) and, on one data shape per
# estimator, pickling and batch/subset invariance of every method. The full set is marked slow.
FAST_CHECKS = {
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
    "check_do_not_raise_errors_in_init_or_set_params", "check_estimators_unfitted",
    "check_transformers_unfitted", "check_mixin_order", "check_valid_tag_types",
    "check_estimator_tags_renamed", "check_estimator_sparse_tag", "check_estimator_sparse_array",
    "check_estimator_sparse_matrix", "check_complex_data", "check_estimators_empty_data_messages",
    "check_fit1d", "check_all_zero_sample_weights_error", "check_estimators_pickle",
    "check_methods_subset_invariance",
}


def _check_name(check):
  return getattr(check, "func", check).__name__


def _split_slow(decorator, fast):
  """Marks the parameters of ``parametrize_with_checks``'s decorator slow unless in ``fast``."""
  argnames, params = decorator.args[:2]
  out = []
  for p in params:
    values, marks, pid = (p.values, list(p.marks), p.id) if hasattr(p, "marks") else (p, [], None)
    if _check_name(values[1]) not in fast:
      marks.append(pytest.mark.slow)
    out.append(pytest.param(*values, marks=marks, id=pid))
  return pytest.mark.parametrize(argnames, out, **decorator.kwargs)


@_split_slow(parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks),
             FAST_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=5
    check(estimator)


# ----------------------------------------------------------------------------------------------
# Data and reference parameters.


def blobs(seed=0, n_per=60, d=3, k=3, scale=4.0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  parts = [rng.normal(size=(n_per, d)) @ rng.normal(size=(d, d)) * 0.7 + scale * rng.normal(size=d)
           for _ in range(k)]
  return np.concatenate(parts).astype(dtype)


def initial_params(x, k, cov_type, seed=0):
  """Rough initial parameters from random points and the data covariance (sklearn layout)."""
  rng = np.random.default_rng(seed)
  d = x.shape[1]
  weights = rng.uniform(0.5, 1.5, size=k)
  weights /= weights.sum()
  means = x[rng.choice(len(x), k, replace=False)]
  cov = np.cov(x.T) + 0.1 * np.eye(d)
  precision = {"full": np.stack([np.linalg.inv(cov)] * k), "tied": np.linalg.inv(cov),
               "diag": np.tile(1.0 / np.diag(cov), (k, 1)),
               "spherical": np.full(k, 1.0 / np.mean(np.diag(cov)))}[cov_type]
  return dict(weights_init=weights, means_init=means, precisions_init=precision)


# ----------------------------------------------------------------------------------------------
# GaussianMixture.


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_gaussian_mixture_equals_sklearn(x64, cov_type):
  x = blobs()
  init = initial_params(x, 3, cov_type)
  kw = dict(n_components=3, covariance_type=cov_type, max_iter=200, tol=1e-6, **init)
  ours = GaussianMixture(**kw).fit(x)
  ref = sk_mixture.GaussianMixture(**kw).fit(x)
  assert ours.weights_.dtype == np.float64
  assert ours.n_iter_ == ref.n_iter_ and ours.converged_ and ref.converged_
  for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
               "lower_bounds_"):
    np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-6, atol=1e-10,
                               err_msg=name)
  np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-9)
  x_new = blobs(seed=1, n_per=20)
  np.testing.assert_allclose(ours.predict_proba(x_new), ref.predict_proba(x_new), rtol=1e-6,
                             atol=1e-12)
  np.testing.assert_allclose(ours.score_samples(x_new), ref.score_samples(x_new), rtol=1e-6)
  np.testing.assert_array_equal(ours.predict(x_new), ref.predict(x_new))
  np.testing.assert_allclose(ours.score(x_new), ref.score(x_new), rtol=1e-6)
  np.testing.assert_allclose(ours.bic(x_new), ref.bic(x_new), rtol=1e-6)
  np.testing.assert_allclose(ours.aic(x_new), ref.aic(x_new), rtol=1e-6)
  assert ours._n_parameters() == ref._n_parameters()  # pylint: disable=protected-access


def test_gaussian_mixture_equals_sklearn_fixed_iterations_and_warm_start(x64):
  x = blobs(seed=3)
  kw = dict(n_components=3, covariance_type="full", max_iter=4, warm_start=True,
            **initial_params(x, 3, "full", seed=1))
  ours, ref = GaussianMixture(**kw), sk_mixture.GaussianMixture(**kw)
  for call in range(5):  # calls 0-2 stop at max_iter, call 3 converges, call 4 continues
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      ours.fit(x)
    assert any(issubclass(w.category, ConvergenceWarning) for w in caught) == (call < 3)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", ConvergenceWarning)
      ref.fit(x)
    assert (ours.n_iter_, ours.converged_) == (ref.n_iter_, ref.converged_), call
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-6)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-6)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-6)
  # Converged fits continued: scikit-learn compares the first iteration with the previous bound.
  assert ours.converged_ and ours.n_iter_ == ref.n_iter_ == 1


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_fit_predict_equals_fit_then_predict(cov_type):
  x = blobs(dtype=np.float32)
  kw = dict(n_components=3, covariance_type=cov_type, random_state=0)
  labels = GaussianMixture(**kw).fit_predict(x)
  model = GaussianMixture(**kw).fit(x)
  np.testing.assert_array_equal(labels, model.predict(x))
  assert labels.dtype == np.int64
  np.testing.assert_array_equal(labels, np.argmax(model.predict_proba(x), axis=1))


def test_gaussian_mixture_int_random_state_is_the_core_key():
  x = blobs(dtype=np.float32)
  ours = GaussianMixture(3, random_state=7).fit(x)
  # One run is the first of the restarts gmm.fit(jax.random.key(7), ..., n_init) would make.
  core = gmm.fit(jax.random.split(jax.random.key(7), 1)[0], x, 3)
  # the same fit up to float32 rounding (two separately compiled programs, which XLA may fuse
  # differently; another key starts elsewhere and ends orders of magnitude further away)
  np.testing.assert_allclose(ours.means_, np.asarray(core.params.means), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ours.covariances_, np.asarray(core.params.covariances), rtol=1e-4,
                             atol=1e-5)
  assert ours.n_iter_ == int(core.n_iter)
  np.testing.assert_array_equal(GaussianMixture(3, random_state=7).fit(x).means_, ours.means_)
  # params_ feeds the functional API
  np.testing.assert_allclose(np.asarray(gmm.log_marginal(ours.params_, x)), ours.score_samples(x),
                             rtol=1e-5, atol=1e-5)


def test_one_run_is_the_first_restart():
  """n_init=1 is restart 0 of every n_init (scikit-learn's restarts share one generator), so more
  restarts never end worse: for GaussianMixture exactly (max_iter=0 keeps restart 0, all bounds
  being -inf), for KMeans on the inertia."""
  x = blobs(dtype=np.float32)
  kw = dict(n_components=3, init_params="random_from_data", max_iter=0, random_state=2)
  np.testing.assert_array_equal(GaussianMixture(**kw, n_init=3).fit(x).means_,
                                GaussianMixture(**kw).fit(x).means_)
  for seed in range(3):
    inertias = [KMeans(6, init="random", n_init=n, max_iter=1, random_state=seed).fit(x).inertia_
                for n in (1, 2, 4)]
    assert inertias[0] >= inertias[1] >= inertias[2], inertias


def test_kmeans_float32_and_float64_get_the_same_seeds():
  x = blobs(seed=4, n_per=40)
  for init in ("k-means++", "random"):
    a = KMeans(5, init=init, n_init=2, max_iter=1, random_state=1).fit(x.astype(np.float32))
    b = KMeans(5, init=init, n_init=2, max_iter=1, random_state=1).fit(x)
    assert a.cluster_centers_.dtype == np.float32 and b.cluster_centers_.dtype == np.float64
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-5)


def test_random_state_instance_and_none(x64):
  x = blobs()
  kw = dict(n_components=3, init_params="random_from_data", max_iter=0)
  # A RandomState is advanced by each fit; None draws from NumPy's global generator.
  rs = np.random.RandomState(0)
  a = GaussianMixture(**kw, random_state=rs).fit(x).means_
  b = GaussianMixture(**kw, random_state=rs).fit(x).means_
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(
      a, GaussianMixture(**kw, random_state=np.random.RandomState(0)).fit(x).means_)
  np.random.seed(5)
  c = GaussianMixture(**kw).fit(x).means_
  np.random.seed(5)
  np.testing.assert_array_equal(c, GaussianMixture(**kw).fit(x).means_)


@pytest.mark.parametrize("given", ["weights_init", "means_init", "precisions_init"])
def test_partial_initialisation_takes_the_rest_from_init_params(x64, given):
  x = blobs()
  init = initial_params(x, 3, "full")
  kw = dict(n_components=3, init_params="random_from_data", random_state=4, max_iter=0)
  base = GaussianMixture(**kw).fit(x)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # max_iter=0: no ConvergenceWarning
    part = GaussianMixture(**kw, **{given: init[given]}).fit(x)
  assert (part.n_iter_, part.converged_, part.lower_bound_, part.lower_bounds_) == (
      0, False, -np.inf, [])
  expected = {"weights_": base.weights_, "means_": base.means_,
              "covariances_": base.covariances_}
  expected[{"weights_init": "weights_", "means_init": "means_",
            "precisions_init": "covariances_"}[given]] = (
                np.linalg.inv(init[given]) if given == "precisions_init" else init[given])
  for name, value in expected.items():
    np.testing.assert_allclose(getattr(part, name), value, rtol=1e-10, err_msg=name)
  if given == "precisions_init":
    np.testing.assert_allclose(part.precisions_, init[given], rtol=1e-10)
  else:  # with restarts, the given part is kept in every one
    restarts = GaussianMixture(**kw, n_init=2, **{given: init[given]}).fit(x)
    np.testing.assert_allclose(getattr(restarts, given[:-5] + "_"), init[given], rtol=1e-12)
  # and the EM iterations then run from there
  part_fit = GaussianMixture(**{**kw, "max_iter": 200, "tol": 1e-6}, **{given: init[given]}).fit(x)
  core = gmm.fit(jax.random.key(0), x, 3, max_iter=200, tol=1e-6, init=gmm.GMMParams(
      part.weights_, part.means_, part.covariances_, "full"))
  np.testing.assert_allclose(part_fit.means_, np.asarray(core.params.means), rtol=1e-10)
  assert part_fit.n_iter_ == int(core.n_iter)


def test_convergence_warning_only_when_not_converged():
  x = blobs(dtype=np.float32)
  with pytest.warns(ConvergenceWarning, match="did not converge"):
    model = GaussianMixture(3, tol=0.0, random_state=0).fit(x)
  assert not model.converged_ and model.n_iter_ == 100
  with warnings.catch_warnings():
    warnings.simplefilter("error", ConvergenceWarning)
    assert GaussianMixture(3, max_iter=100, random_state=0).fit(x).converged_


def test_integer_sample_weight_equals_repeated_rows(x64):
  x = blobs()
  counts = np.random.default_rng(0).integers(0, 3, size=len(x))
  kw = dict(n_components=3, covariance_type="full", max_iter=200, tol=0.0,
            **initial_params(x, 3, "full"))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    weighted = GaussianMixture(**kw).fit(x, sample_weight=counts)
    repeated = GaussianMixture(**kw).fit(np.repeat(x, counts, axis=0))
  np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-9)
  np.testing.assert_allclose(weighted.covariances_, repeated.covariances_, rtol=1e-9)
  np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-9)


def test_gaussian_mixture_sample():
  x = blobs(dtype=np.float32)
  model = GaussianMixture(3, random_state=0).fit(x)
  xs, ys = model.sample(500)
  assert xs.shape == (500, 3) and ys.shape == (500,) and ys.dtype == np.int64
  assert isinstance(xs, np.ndarray) and np.all(np.diff(ys) >= 0)  # grouped by component
  np.testing.assert_array_equal(model.sample(500)[0], xs)  # int random_state: same draws
  for k in range(3):
    assert abs(np.mean(ys == k) - model.weights_[k]) < 0.1
    assert np.all(np.abs(xs[ys == k].mean(0) - model.means_[k]) <
                  5 * np.sqrt(np.diag(model.covariances_[k]) / max(1, np.sum(ys == k))))
  with pytest.raises(ValueError, match="n_samples"):
    model.sample(0)


def test_verbose_prints_iterations(capsys):
  x = blobs(dtype=np.float32)
  GaussianMixture(3, random_state=0, verbose=2, verbose_interval=1).fit(x)
  out = capsys.readouterr().out
  assert "Initialization 0" in out and re.search(r"Iteration 1\t time lapse [0-9.]+s\t ll change",
                                                 out)
  assert "Initialization converged. time lapse" in out and "lower bound" in out


# ----------------------------------------------------------------------------------------------
# Inputs, dtypes, errors (all estimators).


def _estimators():
  return [GaussianMixture(3, random_state=0), KMeans(3, random_state=0), PPCA(2)]


def test_numpy_jax_and_list_inputs_agree_and_return_numpy():
  x = blobs(dtype=np.float32)
  for est in _estimators():
    a = clone(est).fit(x)
    b = clone(est).fit(jnp.asarray(x))
    c = clone(est).fit(x.tolist())  # a list becomes float64, computed in float64
    method = "predict" if not isinstance(est, PPCA) else "transform"
    outs = [getattr(m, method)(inp) for m, inp in ((a, x), (b, jnp.asarray(x)), (c, x.tolist()))]
    for out in outs:
      assert isinstance(out, np.ndarray)
      np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-5)
    assert b.n_features_in_ == 3


def test_dtypes():
  """scikit-learn's dtypes without the user touching JAX's x64 setting: float32 in float32,
  float64 and integers in float64; JAX's global state is left as it was."""
  x32 = blobs(dtype=np.float32)
  assert not jax.config.jax_enable_x64
  for est in _estimators():
    attr = {"GaussianMixture": "means_", "KMeans": "cluster_centers_",
            "PPCA": "components_"}[type(est).__name__]
    method = "transform" if isinstance(est, PPCA) else "predict"
    fitted = clone(est).fit(x32)
    assert getattr(fitted, attr).dtype == np.float32
    fitted64 = clone(est).fit(x32.astype(np.float64))
    assert getattr(fitted64, attr).dtype == np.float64
    assert getattr(clone(est).fit(np.round(x32 * 10).astype(np.int64)), attr).dtype == np.float64
    assert not jax.config.jax_enable_x64  # the scoped x64 did not leak
    if method == "transform":
      assert fitted64.transform(x32).dtype == np.float64  # float64 model: computed in float64
    assert jnp.asarray(1.0).dtype == jnp.float32  # and JAX's default is still float32
  with jax.enable_x64(True):  # float32 stays float32 with x64 on globally (one estimator)
    assert PPCA(2).fit(x32).components_.dtype == np.float32
    assert PPCA(2).fit(x32.astype(np.float64)).components_.dtype == np.float64


def test_float64_input_is_computed_in_float64():
  """Digits' constant pixels need float64 at the default reg_covar: the float64 fit equals the
  one under global x64 (bit for bit) and differs from the float32 one; JAX's state is unchanged."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  x = load_digits().data[:600]
  kw = dict(n_components=8, covariance_type="full", random_state=0, max_iter=20)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    scoped = GaussianMixture(**kw).fit(x)
    assert not jax.config.jax_enable_x64
    with jax.enable_x64(True):
      global_x64 = GaussianMixture(**kw).fit(x)
    as_float32 = GaussianMixture(**kw).fit(x.astype(np.float32))
  assert scoped.means_.dtype == np.float64 and scoped.covariances_.dtype == np.float64
  np.testing.assert_array_equal(scoped.covariances_, global_x64.covariances_)
  assert scoped.score(x) == global_x64.score(x)
  assert as_float32.means_.dtype == np.float32
  assert scoped.lower_bounds_ != as_float32.lower_bounds_


def test_not_fitted_errors():
  x = blobs(dtype=np.float32)
  for method in ("predict", "predict_proba", "score_samples", "score", "bic", "aic"):
    with pytest.raises(NotFittedError):
      getattr(GaussianMixture(3), method)(x)
  with pytest.raises(NotFittedError):
    GaussianMixture(3).sample(2)
  for method in ("predict", "transform", "score"):
    with pytest.raises(NotFittedError):
      getattr(KMeans(3), method)(x)
  for method in ("transform", "score_samples", "score"):
    with pytest.raises(NotFittedError):
      getattr(PPCA(2), method)(x)
  with pytest.raises(NotFittedError):
    PPCA(2).sample(2)


@pytest.mark.parametrize("kwargs, data, match", [
    (dict(covariance_type="banana"), None, "covariance_type"),
    (dict(n_components=0), None, "n_components"),
    (dict(reg_covar=-1.0), None, "reg_covar"),
    (dict(init_params="kmeans++"), None, "init_params"),
    (dict(n_components=500), None, "n_samples >= n_components"),
    (dict(weights_init=[0.5, 0.6, 0.1]), None, "normalized"),
    (dict(weights_init=[0.5, 0.5]), None, "shape"),
    (dict(means_init=np.zeros((3, 2))), None, "shape"),
    (dict(covariance_type="diag", precisions_init=-np.ones((3, 3))), None, "positive"),
    (dict(precisions_init=np.stack([-np.eye(3)] * 3)), None, "positive-definite"),
    ({}, "nan", "NaN"),
    ({}, "1d", "2D array"),
    ({}, "jax_nan", "NaN"),
])
def test_gaussian_mixture_bad_input(kwargs, data, match):
  x = blobs(dtype=np.float32)
  x = {None: x, "nan": np.where(np.arange(x.size).reshape(x.shape) == 4, np.nan, x),
       "1d": x[:, 0], "jax_nan": jnp.asarray(x).at[3, 1].set(jnp.nan)}[data]
  with pytest.raises(ValueError, match=match):
    GaussianMixture(**{"n_components": 3, **kwargs}).fit(x)


def test_bad_input_after_fit():
  x = blobs(dtype=np.float32)
  for est in _estimators():
    est.fit(x)
    method = "transform" if isinstance(est, PPCA) else "predict"
    with pytest.raises(ValueError, match="features"):
      getattr(est, method)(x[:, :2])
    with pytest.raises(ValueError, match="features"):
      getattr(est, method)(jnp.asarray(x[:, :2]))
  with pytest.raises(ValueError, match="sample_weight"):
    KMeans(3).fit(x, sample_weight=np.ones(5))
  with pytest.raises(ValueError, match="sample_weight"):
    GaussianMixture(3).fit(x, sample_weight=-np.ones(len(x)))
  with pytest.raises(ValueError, match="n_components"):
    PPCA(3).fit(x)
  with pytest.raises(ValueError, match="n_samples"):
    KMeans(500).fit(x)


# ----------------------------------------------------------------------------------------------
# KMeans.


@pytest.mark.parametrize("weighted", [False, True])
def test_kmeans_equals_sklearn_from_same_init(x64, weighted):
  x = blobs(seed=2, n_per=80) + 50.0  # uncentred
  rng = np.random.default_rng(1)
  init = x[rng.choice(len(x), 4, replace=False)]
  w = rng.uniform(0.5, 2.0, size=len(x)) if weighted else None
  ours = KMeans(4, init=init, n_init=1).fit(x, sample_weight=w)
  ref = sk_cluster.KMeans(4, init=init, n_init=1).fit(x, sample_weight=w)
  np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-6)
  np.testing.assert_array_equal(ours.labels_, ref.labels_)
  np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-6)
  assert ours.n_iter_ == ref.n_iter_
  x_new = blobs(seed=5, n_per=10) + 50.0
  np.testing.assert_array_equal(ours.predict(x_new), ref.predict(x_new))
  np.testing.assert_allclose(ours.transform(x_new), ref.transform(x_new), rtol=1e-6)
  np.testing.assert_allclose(ours.score(x_new), ref.score(x_new), rtol=1e-6)
  np.testing.assert_allclose(ours.fit_transform(x, sample_weight=w),
                             ref.fit_transform(x, sample_weight=w), rtol=1e-6)
  np.testing.assert_array_equal(ours.fit_predict(x, sample_weight=w), ref.labels_)
  assert ours.labels_.dtype == np.int32 and ours.get_feature_names_out().tolist() == [
      "kmeans0", "kmeans1", "kmeans2", "kmeans3"]


def test_kmeans_n_init_init_and_warnings():
  x = blobs(dtype=np.float32)
  init = x[:3]
  with pytest.warns(RuntimeWarning, match="only one init"):
    KMeans(3, init=init, n_init=4).fit(x)
  calls = []

  def my_init(data, k, random_state):
    calls.append(random_state.randint(1000))
    return data[:k]

  model = KMeans(3, init=my_init, random_state=0).fit(x)  # n_init="auto" -> 10 for callables
  assert len(calls) == 10 and len(set(calls)) > 1
  np.testing.assert_allclose(model.cluster_centers_, KMeans(3, init=x[:3]).fit(x).cluster_centers_)
  dup = np.repeat(x[:2], 10, axis=0)
  with pytest.warns(ConvergenceWarning, match="distinct clusters"):
    KMeans(3, random_state=0).fit(dup)
  # random_state=s is the core's key(s)
  from lvmjax import kmeans  # pylint: disable=g-import-not-at-top
  core = kmeans.fit(jax.random.key(3), x, 3, init="random", n_init=10)
  np.testing.assert_allclose(KMeans(3, init="random", random_state=3).fit(x).cluster_centers_,
                             np.asarray(core.centroids), rtol=1e-6, atol=1e-6)  # up to rounding


def test_kmeans_sparse_elkan_and_verbose_give_the_dense_lloyd_fit(capsys, monkeypatch):
  from scipy import sparse  # pylint: disable=g-import-not-at-top
  from lvmjax.sklearn import _common  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(_common, "SPARSE_BLOCK_ROWS", 7)  # predict/transform/score in 7-row blocks
  x = np.maximum(blobs(dtype=np.float32, scale=2.0), 0)  # nonnegative, with zeros
  kw = dict(n_clusters=4, random_state=0, n_init=2)
  ref = KMeans(**kw).fit(x)
  for variant in (KMeans(**kw, algorithm="elkan"), KMeans(**kw, verbose=1)):
    for data in (x, sparse.csr_matrix(x)):
      fitted = clone(variant).fit(data)
      np.testing.assert_array_equal(fitted.labels_, ref.labels_)
      np.testing.assert_allclose(fitted.cluster_centers_, ref.cluster_centers_, rtol=1e-6)
      assert fitted.n_iter_ == ref.n_iter_
      np.testing.assert_array_equal(fitted.predict(data), ref.labels_)
      np.testing.assert_allclose(fitted.transform(data), ref.transform(x), rtol=1e-5, atol=1e-4)
      np.testing.assert_allclose(fitted.score(data), ref.score(x), rtol=1e-5)
  out = capsys.readouterr().out
  assert out.count("Initialization complete") == 2
  assert f"Iteration {ref.n_iter_ - 1}, inertia " in out
  assert re.search(rf"Converged at iteration {ref.n_iter_ - 1}: (strict convergence|center shift "
                   r"\S+ within tolerance \S+)\.", out)


# ----------------------------------------------------------------------------------------------
# PPCA.


def _low_rank_data(n=300, d=6, l=2, seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d, l)) * 2
  return (rng.normal(size=(n, l)) @ w.T + 0.5 * rng.normal(size=(n, d)) + 3.0).astype(dtype)


def test_ppca_equals_sklearn_pca_likelihood(x64):
  x = _low_rank_data()
  n = len(x)
  ours = PPCA(2).fit(x)
  ref = sk_decomposition.PCA(2).fit(x)
  # PCA's covariance divides by N - 1; PPCA's maximum-likelihood one by N.
  ref.explained_variance_ = ref.explained_variance_ * (n - 1) / n
  ref.noise_variance_ = ref.noise_variance_ * (n - 1) / n
  x_new = _low_rank_data(n=40, seed=1)
  np.testing.assert_allclose(ours.score_samples(x_new), ref.score_samples(x_new), rtol=1e-6)
  np.testing.assert_allclose(ours.score(x_new), ref.score(x_new), rtol=1e-6)
  np.testing.assert_allclose(ours.noise_variance_, ref.noise_variance_, rtol=1e-6)
  np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-6)
  np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_,
                             rtol=1e-6)
  np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-12)
  np.testing.assert_allclose(ours.get_covariance(), ref.get_covariance(), rtol=1e-6)
  np.testing.assert_allclose(ours.get_precision(), ref.get_precision(), rtol=1e-6, atol=1e-10)
  # loadings: orthogonal rows along PCA's axes, squared norms lambda - sigma^2
  axes = ours.components_ / np.linalg.norm(ours.components_, axis=1, keepdims=True)
  np.testing.assert_allclose(np.abs(axes @ ref.components_.T), np.eye(2), atol=1e-8)
  np.testing.assert_allclose(np.sum(ours.components_**2, axis=1),
                             ref.explained_variance_ - ref.noise_variance_, rtol=1e-6)


def test_ppca_transform_is_posterior_mean_and_inverse(x64):
  x = _low_rank_data()
  model = PPCA(2).fit(x)
  w, mu, s2 = model.components_.T, model.mean_, model.noise_variance_
  # Tipping & Bishop: E[z | x] = (W^T W + s2 I)^{-1} W^T (x - mu)
  ref = np.linalg.solve(w.T @ w + s2 * np.eye(2), w.T @ (x - mu).T).T
  np.testing.assert_allclose(model.transform(x), ref, rtol=1e-8)
  np.testing.assert_allclose(model.fit_transform(x), ref, rtol=1e-8)
  z = np.random.default_rng(0).normal(size=(5, 2))
  np.testing.assert_allclose(model.inverse_transform(z), z @ w.T + mu, rtol=1e-12)
  samples = PPCA(2, random_state=0).fit(x).sample(4000)
  assert samples.shape == (4000, 6)
  np.testing.assert_allclose(np.cov(samples.T), model.get_covariance(), atol=0.15 * np.max(
      np.abs(model.get_covariance())))
  assert model.get_feature_names_out().tolist() == ["ppca0", "ppca1"]


def test_ppca_default_components_and_degenerate_data():
  x = _low_rank_data(dtype=np.float32)
  assert PPCA().fit(x).n_components_ == 5
  few = x[:3]  # rank 2 after centring: the default L = 1 leaves a positive noise variance
  model = PPCA().fit(few)
  assert model.n_components_ == 1 and model.noise_variance_ > 0
  flat = np.repeat(x[:1], 5, axis=0)  # no variance at all: floored noise, finite scores
  model = PPCA(1).fit(flat)
  assert model.noise_variance_ > 0 and np.all(np.isfinite(model.score_samples(flat)))


# ----------------------------------------------------------------------------------------------
# Pickling keeps the fitted model.


def test_pickle_roundtrip():
  x = blobs(dtype=np.float32)
  for est in _estimators():
    est.fit(x)
    again = pickle.loads(pickle.dumps(est))
    method = "transform" if isinstance(est, PPCA) else "predict"
    np.testing.assert_array_equal(getattr(again, method)(x), getattr(est, method)(x))


@pytest.mark.slow
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_gaussian_mixture_equals_sklearn_larger(x64, cov_type):
  x = blobs(seed=7, n_per=3000, d=8, k=6)
  init = initial_params(x, 6, cov_type, seed=2)
  kw = dict(n_components=6, covariance_type=cov_type, max_iter=300, tol=1e-8, **init)
  ours = GaussianMixture(**kw).fit(x)
  ref = sk_mixture.GaussianMixture(**kw).fit(x)
  assert ours.n_iter_ == ref.n_iter_
  for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
    np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-6, atol=1e-9,
                               err_msg=name)
