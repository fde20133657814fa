"""The variational Bayesian GMM (lvmjax.gmm.bayesian, lvmjax.sklearn.BayesianGaussianMixture):
the same fit as scikit-learn's from the same responsibilities (float64), a lower bound that never
decreases, surplus components switched off, and the mixture machinery (chunks, weights, restarts,
meshes, streams, frozen fields) giving the plain call's result."""
import itertools
import warnings

import jax
import numpy as np
import pytest
from sklearn import mixture as sk_mixture

from lvmjax import mixture
from lvmjax import sharding
from lvmjax.gmm import bayesian
from lvmjax.sklearn import BayesianGaussianMixture

PRIORS = bayesian.WEIGHT_PRIOR_TYPES
COVS = ("full", "tied", "diag", "spherical")
# Default run: both prior types and all four covariance types; the other pairs are slow.
FAST_PAIRS = {("dirichlet_process", "full"), ("dirichlet_distribution", "tied"),
              ("dirichlet_process", "diag"), ("dirichlet_distribution", "spherical")}
PAIRS = [p if p in FAST_PAIRS else pytest.param(*p, marks=pytest.mark.slow)
         for p in itertools.product(PRIORS, COVS)]
FIELDS = ("weight_concentration", "mean_precision", "means", "degrees_of_freedom", "covariances")


def _data(n=150, dtype=np.float64, seed=0):
  """Three clusters in 3 dimensions, with different shapes."""
  rng = np.random.default_rng(seed)
  centres = np.array([[-4.0, 0.0, 1.0], [0.0, 3.0, -1.0], [4.0, -1.0, 0.0]])
  z = rng.choice(3, n, p=[0.3, 0.3, 0.4])
  scales = np.array([[1.0, 0.5, 0.8], [0.6, 1.2, 0.7], [0.9, 0.9, 0.4]])
  return (centres[z] + rng.normal(size=(n, 3)) * scales[z]).astype(dtype)


def _resp(n, k, seed=1):
  r = np.random.default_rng(seed).uniform(size=(n, k))
  return r / r.sum(1, keepdims=True)


def _sklearn_from(x, resp, **kw):
  """scikit-learn's fit from the responsibilities ``resp`` (its ``_initialize``, then the loop
  as a warm start)."""
  sk = sk_mixture.BayesianGaussianMixture(warm_start=True, **kw)
  sk._check_parameters(x)  # pylint: disable=protected-access
  sk._initialize(x, resp)  # pylint: disable=protected-access
  sk.converged_, sk.lower_bound_ = False, -np.inf
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return sk.fit(x)


@pytest.mark.parametrize("prior_type,cov_type", PAIRS)
def test_same_fit_as_sklearn_float64(x64, prior_type, cov_type):
  """From the same responsibilities: the same variational parameters, lower bounds (scikit-learn
  sums them; lvmjax records them per point) and number of iterations; the bound never
  decreases."""
  x = _data()
  k, tol = 5, 1e-3
  resp = _resp(len(x), k)
  sk = _sklearn_from(x, resp, n_components=k, covariance_type=cov_type,
                     weight_concentration_prior_type=prior_type, tol=tol, max_iter=300)
  family = bayesian.prior(x, num_components=k, covariance_type=cov_type,
                          weight_concentration_prior_type=prior_type)
  start = bayesian.params_from_responsibilities(family, x, resp)
  res = bayesian.fit(jax.random.key(0), x, k, cov_type, weight_concentration_prior_type=prior_type,
                     init=start, max_iter=300, tol=tol / len(x))
  assert sk.converged_ and bool(res.converged)
  assert int(res.n_iter) == sk.n_iter_ > 5
  conc = sk.weight_concentration_
  want = dict(weight_concentration=np.stack(conc) if isinstance(conc, tuple) else conc,
              mean_precision=sk.mean_precision_, means=sk.means_,
              degrees_of_freedom=sk.degrees_of_freedom_, covariances=sk.covariances_)
  for name in FIELDS:
    np.testing.assert_allclose(getattr(res.params, name), want[name], rtol=1e-6, err_msg=name)
  np.testing.assert_allclose(res.weights, sk.weights_, rtol=1e-6)
  bounds = np.asarray(res.lower_bounds) * len(x)
  np.testing.assert_allclose(bounds, np.ravel(sk.lower_bounds_), rtol=1e-6)
  assert np.all(np.diff(bounds) >= 0)
  np.testing.assert_allclose(bayesian.posterior(res.params, x), sk.predict_proba(x), rtol=1e-6,
                             atol=1e-12)
  np.testing.assert_allclose(bayesian.score_samples(res.params, x), sk.score_samples(x),
                             rtol=1e-6)


def test_drop_in_equals_sklearn_attribute_by_attribute(x64):
  """The estimator from the same responsibilities: every fitted attribute of scikit-learn's."""
  x = _data(seed=3)
  resp = _resp(len(x), 4, seed=4)
  kw = dict(n_components=4, covariance_type="full", max_iter=200, tol=1e-4)
  sk = _sklearn_from(x, resp, **kw)
  ours = BayesianGaussianMixture(warm_start=True, **kw)
  ours._initialize(x, resp)  # pylint: disable=protected-access
  ours.converged_, ours.lower_bound_ = False, -np.inf
  ours.fit(x)
  assert ours.n_iter_ == sk.n_iter_ and ours.converged_ and sk.converged_
  for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
               "mean_precision_", "degrees_of_freedom_", "mean_prior_", "covariance_prior_"):
    np.testing.assert_allclose(getattr(ours, name), getattr(sk, name), rtol=1e-6, err_msg=name)
  for a, b in zip(ours.weight_concentration_, sk.weight_concentration_):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-6)
  np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=1e-6)
  np.testing.assert_array_equal(ours.predict(x), sk.predict(x))
  np.testing.assert_allclose(ours.score(x), sk.score(x), rtol=1e-6)
  assert ours.means_.dtype == np.float64
  xs, zs = ours.sample(50)
  assert xs.shape == (50, 3) and zs.shape == (50,)


@pytest.mark.parametrize("prior_type", PRIORS)
def test_small_concentration_switches_surplus_components_off(prior_type):
  """Three well-separated clusters, K = 8 and a small weight concentration (float32): three
  effective components, the five others reported as negligible; the bound never decreases."""
  x = _data(n=600, dtype=np.float32, seed=6) * 2.0
  res = bayesian.fit(jax.random.key(2), x, 8, "full", weight_concentration_prior_type=prior_type,
                     weight_concentration_prior=1e-3, init="random", max_iter=1000, tol=1e-7)
  assert bool(res.converged)
  assert int(res.effective_components) == 3
  negligible = np.asarray(res.negligible)
  assert int(np.sum(negligible)) == 5
  counts = np.asarray(res.params.mean_precision) - 1.0  # N_k = beta_k - beta_0
  assert np.all(counts[negligible] < 0.1) and np.all(counts[~negligible] > 100)
  np.testing.assert_allclose(np.sort(counts[~negligible]) / 600, [0.3, 0.3, 0.4], atol=0.06)
  bounds = np.asarray(res.lower_bounds)
  assert len(bounds) > 10 and np.all(np.isfinite(bounds))
  assert np.all(np.diff(bounds) >= -1e-6 * np.abs(bounds[1:]))


def test_bad_input_is_a_value_error():
  x = _data(n=40, dtype=np.float32)
  key = jax.random.key(0)
  bad = [
      dict(covariance_type="low-rank"),
      dict(weight_concentration_prior_type="pitman-yor"),
      dict(weight_concentration_prior=0.0),
      dict(mean_precision_prior=-1.0),
      dict(degrees_of_freedom_prior=2.0),          # must exceed D - 1 = 2
      dict(mean_prior=np.zeros(2)),
      dict(covariance_prior=-np.eye(3)),
      dict(covariance_type="diag", covariance_prior=np.ones((3, 3))),
      dict(init="nonsense"),
      dict(fixed=("not_a_field",)),
      dict(max_iter=-1),
  ]
  for kw in bad:
    with pytest.raises(ValueError):
      bayesian.fit(key, x, 3, **kw)
  with pytest.raises(ValueError, match="key"):
    bayesian.fit(0, x, 3)
  with pytest.raises(ValueError, match="at least as many points"):
    bayesian.fit(key, x[:2], 3)
  start = bayesian.fit(key, x, 3, max_iter=0).params
  with pytest.raises(ValueError, match="shape"):
    bayesian.fit(key, x, 4, init=start)
  with pytest.raises(ValueError, match="covariance_type"):
    bayesian.fit(key, x, 3, "diag", init=start)
  with pytest.raises(ValueError, match="degrees_of_freedom_prior"):
    BayesianGaussianMixture(degrees_of_freedom_prior=1.0).fit(np.asarray(x, np.float64))


def _start(x, k=4, cov_type="full"):
  family = bayesian.prior(x, num_components=k, covariance_type=cov_type)
  return family, bayesian.params_from_responsibilities(family, x, _resp(len(x), k, seed=7))


def _assert_same(a, b, rtol=1e-9):
  assert int(a.n_iter) == int(b.n_iter)
  np.testing.assert_allclose(a.lower_bounds, b.lower_bounds, rtol=rtol)
  for name in FIELDS:
    np.testing.assert_allclose(getattr(a.params, name), getattr(b.params, name), rtol=rtol,
                               err_msg=name)


def test_chunks_weights_restarts_and_mesh_give_the_plain_fit(x64):
  x = _data(n=130, seed=8)
  _, start = _start(x)
  kw = dict(init=start, max_iter=60, tol=1e-9)
  plain = bayesian.fit(jax.random.key(0), x, 4, **kw)
  _assert_same(bayesian.fit(jax.random.key(0), x, 4, chunk_size=16, **kw), plain)
  _assert_same(bayesian.fit(jax.random.key(0), x, 4, mesh=sharding.data_mesh(jax.devices()[:1]),
                            chunk_size=32, **kw), plain)
  # Integer sample weights equal repeated rows (the default priors are weighted too).
  reps = np.random.default_rng(9).integers(0, 3, len(x))
  reps[:4] = 1
  _, start_w = _start(np.repeat(x, reps, axis=0))
  weighted = bayesian.fit(jax.random.key(0), x, 4, sample_weight=reps, init=start_w,
                          max_iter=60, tol=1e-9)
  repeated = bayesian.fit(jax.random.key(0), np.repeat(x, reps, axis=0), 4, init=start_w,
                          max_iter=60, tol=1e-9)
  _assert_same(weighted, repeated, rtol=1e-8)
  # Restarts: one vmapped call returns the best of the single fits with the split keys.
  key = jax.random.key(4)
  best = bayesian.fit(key, x, 4, init="random", n_init=3, max_iter=60)
  singles = [bayesian.fit(k, x, 4, init="random", max_iter=60) for k in jax.random.split(key, 3)]
  scores = [float(s.lower_bound) for s in singles]
  assert len(set(np.round(scores, 8))) > 1
  _assert_same(best, singles[int(np.argmax(scores))], rtol=1e-8)


def test_one_iteration_by_hand_eagerly_equals_the_compiled_fit(x64):
  """E-step, M-step and bound through the family's pieces, eagerly, equal fit(max_iter=1)."""
  x = _data(n=90, seed=10)
  family, start = _start(x, 3, "tied")
  with jax.disable_jit():
    stats = mixture.e_step(family, start, x)
    new = family.m_step(start, stats)
    bound = family.objective(new, stats)
  res = bayesian.fit(jax.random.key(0), x, 3, "tied", init=start, max_iter=1)
  np.testing.assert_allclose(float(res.lower_bounds[0]), float(bound), rtol=1e-10)
  for name in FIELDS:
    np.testing.assert_allclose(getattr(res.params, name), getattr(new, name), rtol=1e-10)
  # The entropy statistic is that of the responsibilities, computed directly.
  r = np.asarray(bayesian.posterior(start, x))
  np.testing.assert_allclose(float(stats.entropy), -np.sum(r * np.log(r)), rtol=1e-9)


def test_streaming_equals_in_memory_and_fit_continues(x64):
  x = _data(n=200, seed=11)
  family, start = _start(x, 4, "diag")
  mem = bayesian.fit(jax.random.key(0), x, 4, "diag", init=start, max_iter=40, tol=1e-9)

  def batches():
    for i in range(0, len(x), 64):
      yield x[i:i + 64], None

  res = bayesian.fit_streaming(family, start, batches, 3, max_iter=40, tol=1e-9, batch_size=64)
  _assert_same(res, mem, rtol=1e-9)
  part = bayesian.fit(jax.random.key(0), x, 4, "diag", init=start, max_iter=15, tol=1e-9)
  more = bayesian.fit(jax.random.key(0), x, 4, "diag", init=part, max_iter=40, tol=1e-9)
  _assert_same(more, mem, rtol=1e-9)


@pytest.mark.parametrize("fixed", [("means",), ("covariances", "degrees_of_freedom"),
                                   ("weight_concentration",)], ids="+".join)
def test_fixed_fields_stay_bit_for_bit(fixed):
  x = _data(n=120, dtype=np.float32, seed=12)
  _, start = _start(x, 4)
  for mesh in (None, sharding.data_mesh(jax.devices()[:1])):
    res = bayesian.fit(jax.random.key(0), x, 4, init=start, max_iter=30, fixed=fixed, mesh=mesh)
    for name in FIELDS:
      a, b = np.asarray(getattr(res.params, name)), np.asarray(getattr(start, name))
      if name in fixed:
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), name
      else:
        assert not np.allclose(a, b), f"{name} is free but did not move"


def test_drop_in_float32_stays_float32_and_warm_start_is_monotone():
  x = _data(n=200, dtype=np.float32, seed=13)
  est = BayesianGaussianMixture(n_components=4, random_state=0, max_iter=1, warm_start=True,
                                weight_concentration_prior_type="dirichlet_distribution")
  bounds = []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for _ in range(30):
      bounds.append(est.fit(x).lower_bound_)
      if est.converged_:
        break
  assert est.means_.dtype == np.float32 and est.predict_proba(x).dtype == np.float32
  assert np.all(np.diff(bounds) >= -1e-4 * np.abs(bounds[1:]))
  assert est.predict(x).shape == (200,)
