"""Tests of lvmjax.gmm against independent references (scikit-learn, scipy, distrax)."""
import warnings

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from lvmjax import gmm

COV_TYPES = gmm.COVARIANCE_TYPES


def some_slow(keep, values=COV_TYPES):
  """``values``, those not in ``keep`` marked slow: the default run checks ``keep``."""
  return [v if v in keep else pytest.param(v, marks=pytest.mark.slow) for v in values]


def blobs(seed=0, n_per=150, d=3, k=3, scale=4.0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  parts = [rng.normal(size=(n_per, d)) @ rng.normal(size=(d, d)) * 0.7 + scale * rng.normal(size=d)
           for _ in range(k)]
  return np.concatenate(parts).astype(dtype)


def random_params(seed, k, d, cov_type, dtype=np.float64):
  rng = np.random.default_rng(seed)
  w = rng.uniform(0.5, 1.5, size=k)
  w /= w.sum()
  means = rng.normal(size=(k, d)) * 2
  a = rng.normal(size=(k, d, d))
  full = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)
  cov = {"full": full, "tied": full[0], "diag": rng.uniform(0.3, 2.0, size=(k, d)),
         "spherical": rng.uniform(0.3, 2.0, size=k)}[cov_type]
  return gmm.GMMParams(jnp.asarray(w, dtype), jnp.asarray(means, dtype), jnp.asarray(cov, dtype),
                       cov_type)


def full_covariances(p):
  k, d = p.means.shape
  c = np.asarray(p.covariances)
  if p.covariance_type == "full":
    return c
  if p.covariance_type == "tied":
    return np.broadcast_to(c, (k, d, d))
  if p.covariance_type == "diag":
    return np.stack([np.diag(v) for v in c])
  return np.stack([v * np.eye(d) for v in c])


def sklearn_precisions(p):
  c = np.asarray(p.covariances)
  return np.linalg.inv(c) if p.covariance_type in ("full", "tied") else 1.0 / c


# ----------------------------------------------------------------------------------------------
# Densities, posterior, sampling.


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_log_joint_matches_scipy_and_distrax(x64, strict_promotion, cov_type):
  p = random_params(1, 4, 3, cov_type)
  x = np.random.default_rng(2).normal(size=(50, 3)) * 2
  lj = np.asarray(gmm.log_joint(p, x))
  covs = full_covariances(p)
  ref = np.stack([np.log(p.weights[k]) + sps.multivariate_normal(p.means[k], covs[k]).logpdf(x)
                  for k in range(4)], axis=1)
  np.testing.assert_allclose(lj, ref, rtol=1e-10, atol=1e-10)
  with jax.numpy_rank_promotion("allow"):  # distrax itself relies on rank promotion
    mix = distrax.MixtureSameFamily(
        distrax.Categorical(probs=p.weights),
        distrax.MultivariateNormalFullCovariance(p.means, jnp.asarray(covs)))
    np.testing.assert_allclose(gmm.log_marginal(p, x), mix.log_prob(x), rtol=1e-10)


@pytest.mark.parametrize("cov_type", ["diag", "spherical"])
def test_diagonal_log_marginal_gradients_match_the_difference_form(x64, cov_type):
  """The diagonal densities (matrix-product form, centred) and their first and second derivatives
  equal the textbook difference form in float64, also for data far from the origin."""
  r = np.random.default_rng(3)
  k, d = 4, 3
  means = 50.0 + r.normal(size=(k, d))
  log_var = 0.3 * r.normal(size=(k, d) if cov_type == "diag" else (k,))
  x = 50.0 + r.normal(size=(9, d))

  def reference(means, log_var, x):
    var = jnp.exp(log_var) if cov_type == "diag" else jnp.exp(log_var)[:, None] * jnp.ones(d)
    sq = (x[:, None] - means[None]) ** 2 / var[None]
    lp = -0.5 * jnp.sum(sq + jnp.log(2 * jnp.pi * var)[None], -1) + jnp.log(1 / k)
    return jnp.sum(jnp.sin(jax.nn.logsumexp(lp, -1)))

  def ours(means, log_var, x):
    p = gmm.GMMParams(jnp.full((k,), 1 / k), means, jnp.exp(log_var), cov_type)
    return jnp.sum(jnp.sin(gmm.log_marginal(p, x)))

  np.testing.assert_allclose(ours(means, log_var, x), reference(means, log_var, x), rtol=1e-12)
  # Compiled (jax.jit): eager, the Hessians dispatch thousands of small operations one by one.
  for a, b in zip(jax.jit(jax.grad(ours, (0, 1, 2)))(means, log_var, x),
                  jax.jit(jax.grad(reference, (0, 1, 2)))(means, log_var, x)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(jax.jit(jax.hessian(ours))(means, log_var, x),
                             jax.jit(jax.hessian(reference))(means, log_var, x), rtol=1e-8,
                             atol=1e-8)


def test_log_joint_batch_shapes(strict_promotion):
  p = random_params(0, 3, 2, "full", np.float32)
  x = jnp.ones((4, 5, 2))
  assert gmm.log_joint(p, x).shape == (4, 5, 3)
  assert gmm.log_marginal(p, x).shape == (4, 5)
  assert gmm.map_latent(p, x).shape == (4, 5)
  assert gmm.log_joint(p, x).dtype == jnp.float32


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_posterior_and_map(x64, cov_type):
  p = random_params(3, 5, 2, cov_type)
  x = np.random.default_rng(4).normal(size=(200, 2)) * 3
  post = np.asarray(gmm.posterior(p, x))
  np.testing.assert_allclose(post.sum(-1), 1.0, rtol=1e-12)
  # Bayes' rule by hand.
  lj = np.asarray(gmm.log_joint(p, x))
  np.testing.assert_allclose(post, np.exp(lj) / np.exp(lj).sum(-1, keepdims=True), rtol=1e-9)
  np.testing.assert_array_equal(gmm.map_latent(p, x), post.argmax(-1))


def test_log_marginal_stable_far_from_components():
  p = random_params(0, 3, 2, "full", np.float32)
  x = jnp.full((2, 2), 1e3, jnp.float32)
  lm = gmm.log_marginal(p, x)
  assert np.all(np.isfinite(lm)) and np.all(lm < -1e4)
  assert np.all(np.isfinite(gmm.posterior(p, x)))


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_sample_moments(x64, cov_type):
  p = random_params(5, 3, 2, cov_type)
  x, z = gmm.sample(jax.random.key(0), p, 60_000)
  x, z = np.asarray(x), np.asarray(z)
  assert x.shape == (60_000, 2) and z.shape == (60_000,)
  np.testing.assert_allclose(np.bincount(z, minlength=3) / len(z), p.weights, atol=0.01)
  covs = full_covariances(p)
  for k in range(3):
    xk = x[z == k]
    np.testing.assert_allclose(xk.mean(0), p.means[k], atol=0.06 * np.sqrt(covs[k].max()) + 0.02)
    np.testing.assert_allclose(np.cov(xk.T), covs[k], atol=0.08 * np.abs(covs[k]).max())


def test_sample_given_draws_from_chosen_components(x64):
  p = random_params(6, 3, 2, "full")
  z = jnp.array([2] * 20_000 + [0] * 20_000)
  x = np.asarray(gmm.sample_given(jax.random.key(1), p, z))
  np.testing.assert_allclose(x[:20_000].mean(0), p.means[2], atol=0.06)
  np.testing.assert_allclose(x[20_000:].mean(0), p.means[0], atol=0.06)
  np.testing.assert_allclose(np.cov(x[:20_000].T), p.covariances[2], rtol=0.06, atol=0.05)
  # MAP of the generated points recovers the chosen components for well-separated components.
  sep = p.replace(means=p.means * 50)
  xs = gmm.sample_given(jax.random.key(2), sep, z)
  assert np.mean(np.asarray(gmm.map_latent(sep, xs)) == np.asarray(z)) > 0.99


def test_sample_is_deterministic_in_key():
  p = random_params(0, 3, 2, "diag", np.float32)
  a = gmm.sample(jax.random.key(3), p, 10)
  b = gmm.sample(jax.random.key(3), p, 10)
  np.testing.assert_array_equal(a[0], b[0])
  assert a[0].dtype == jnp.float32


def test_sample_takes_params_then_key_and_the_old_order_too():
  p = random_params(0, 3, 2, "full", np.float32)
  key = jax.random.key(7)
  for new, old in ((gmm.sample(p, key, 50), gmm.sample(key, p, 50)),
                   (gmm.sample_given(p, key, jnp.array([0, 2, 1])),
                    gmm.sample_given(key, p, jnp.array([0, 2, 1])))):
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)):
      np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="GMMParams"):
    gmm.sample(key, key, 5)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_bic_aic_and_num_parameters_match_sklearn(x64, cov_type):
  x = blobs()
  p = random_params(7, 3, 3, cov_type)
  sk = GaussianMixture(3, covariance_type=cov_type)
  sk.weights_, sk.means_, sk.covariances_ = (np.asarray(p.weights), np.asarray(p.means),
                                             np.asarray(p.covariances))
  prec = sklearn_precisions(p)
  sk.precisions_cholesky_ = (np.linalg.cholesky(prec) if cov_type in ("full", "tied")
                             else np.sqrt(prec))
  assert gmm.num_parameters(p) == sk._n_parameters()  # pylint: disable=protected-access
  np.testing.assert_allclose(gmm.bic(p, x), sk.bic(x), rtol=1e-10)
  np.testing.assert_allclose(gmm.aic(p, x), sk.aic(x), rtol=1e-10)
  np.testing.assert_allclose(gmm.log_marginal(p, x), sk.score_samples(x), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# EM against scikit-learn.


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_fit_matches_sklearn_iteration_by_iteration(x64, cov_type):
  x = blobs(seed=11)
  p0 = random_params(12, 3, 3, cov_type)
  p0 = p0.replace(means=jnp.asarray(x[[0, 200, 400]]))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    sk = GaussianMixture(3, covariance_type=cov_type, weights_init=np.asarray(p0.weights),
                         means_init=np.asarray(p0.means), precisions_init=sklearn_precisions(p0),
                         max_iter=40, tol=1e-9, reg_covar=1e-4).fit(x)
  ours = gmm.fit(jax.random.key(0), x, 3, cov_type, init=p0, max_iter=40, tol=1e-9,
                 reg_covar=1e-4)
  assert int(ours.n_iter) == sk.n_iter_
  assert bool(ours.converged) == sk.converged_
  np.testing.assert_allclose(ours.log_likelihood, sk.lower_bounds_, rtol=1e-6)
  np.testing.assert_allclose(ours.params.weights, sk.weights_, rtol=1e-6)
  np.testing.assert_allclose(ours.params.means, sk.means_, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(ours.params.covariances, sk.covariances_, rtol=1e-6, atol=1e-9)
  assert ours.params.means.dtype == jnp.float64


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_log_likelihood_never_decreases(x64, cov_type):
  x = blobs(seed=21, k=4)
  result = gmm.fit(jax.random.key(3), x, 5, cov_type, init="random_from_data", max_iter=60,
                   tol=0.0)
  ll = np.asarray(result.log_likelihood)
  assert ll.shape == (60,)
  assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:])), np.diff(ll).min()


def test_float32_tracks_sklearn_float32_on_near_singular_data():
  # Digits-like data: columns constant within groups; raw moments would drown reg_covar.
  rng = np.random.default_rng(0)
  x = np.zeros((600, 12), np.float32)
  x[:300, :6] = 16.0
  x[300:, 6:] = 12.0
  x[:, [0, 7]] += rng.normal(size=(600, 2)).astype(np.float32)
  x[::50, 3] += 4.0
  p0 = gmm.GMMParams(jnp.array([0.5, 0.5], jnp.float32), jnp.asarray(x[[0, 599]]),
                     jnp.tile(jnp.eye(12, dtype=jnp.float32), (2, 1, 1)), "full")
  ours = gmm.fit(jax.random.key(0), x, 2, init=p0, max_iter=10, tol=0.0)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    sk = GaussianMixture(2, weights_init=[0.5, 0.5], means_init=x[[0, 599]],
                         precisions_init=np.tile(np.eye(12), (2, 1, 1)), max_iter=10,
                         tol=0.0).fit(x)
  np.testing.assert_allclose(ours.log_likelihood, sk.lower_bounds_, rtol=1e-4)
  # The reported log-likelihood is that of the parameters (no drift from rounding).
  final = float(jnp.mean(gmm.log_marginal(ours.params, x)))
  assert final >= float(ours.log_likelihood[-1]) - 1e-3


# ----------------------------------------------------------------------------------------------
# Sufficient statistics, weights, chunks, restarts, jit.


@pytest.mark.parametrize("cov_type", some_slow(("full", "diag")))
def test_chunked_e_step_equals_unchunked_and_stats_add(x64, cov_type):
  x = blobs(seed=5)
  p = random_params(8, 3, 3, cov_type)
  whole = gmm.e_step(p, x, chunk_size=len(x))
  for chunk in (7, 64, 450):
    chunked = gmm.e_step(p, x, chunk_size=chunk)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10), whole,
                 chunked)
  halves = jax.tree.map(jnp.add, gmm.e_step(p, x[:200]), gmm.e_step(p, x[200:]))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10), whole,
               halves)
  new, ll = gmm.em_step(p, x)
  np.testing.assert_allclose(ll, np.mean(gmm.log_marginal(p, x)), rtol=1e-12)
  np.testing.assert_allclose(new.weights, gmm.posterior(p, x).mean(0), rtol=1e-10)


@pytest.mark.parametrize("cov_type", some_slow(("full", "diag")))
def test_integer_sample_weight_equals_repeating_rows(x64, cov_type):
  x = blobs(seed=9, n_per=60)
  counts = np.random.default_rng(0).integers(0, 4, size=len(x))
  p0 = random_params(2, 3, 3, cov_type).replace(means=jnp.asarray(x[[0, 70, 140]]))
  weighted = gmm.fit(jax.random.key(0), x, 3, cov_type, init=p0, sample_weight=counts,
                     max_iter=30, tol=1e-10)
  repeated = gmm.fit(jax.random.key(0), np.repeat(x, counts, axis=0), 3, cov_type, init=p0,
                     max_iter=30, tol=1e-10)
  assert int(weighted.n_iter) == int(repeated.n_iter)
  np.testing.assert_allclose(weighted.log_likelihood, repeated.log_likelihood, rtol=1e-8)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10),
               weighted.params, repeated.params)


def test_fit_eager_equals_jit(x64):
  x = blobs(seed=3, n_per=10, d=2, k=2)
  kwargs = dict(num_components=2, covariance_type="full", init="random_from_data", max_iter=4,
                tol=0.0, chunk_size=8)
  jitted = gmm.fit(jax.random.key(5), x, **kwargs)
  with jax.disable_jit():
    eager = gmm.fit(jax.random.key(5), x, **kwargs)
  assert int(eager.n_iter) == int(jitted.n_iter) == 4
  np.testing.assert_allclose(eager.log_likelihood, jitted.log_likelihood, rtol=1e-10)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
               eager.params, jitted.params)


@pytest.mark.parametrize("init", ["kmeans", pytest.param("k-means++", marks=pytest.mark.slow),
                                  pytest.param("random", marks=pytest.mark.slow),
                                  pytest.param("random_from_data", marks=pytest.mark.slow)])
def test_vmapped_restarts_return_the_best(init):
  x = blobs(seed=4, k=5, scale=3.0, dtype=np.float32)
  key = jax.random.key(7)
  best = gmm.fit(key, x, 5, "full", init=init, n_init=4)
  singles = [gmm.fit(k, x, 5, "full", init=init) for k in jax.random.split(key, 4)]
  bounds = [float(s.lower_bound) for s in singles]
  i = int(np.argmax(bounds))
  np.testing.assert_allclose(float(best.lower_bound), bounds[i], rtol=1e-5)
  np.testing.assert_allclose(best.params.means, singles[i].params.means, rtol=1e-4, atol=1e-4)
  assert int(best.n_iter) == int(singles[i].n_iter)


@pytest.mark.parametrize("init, cov_type", [
    # the default run fits each init once and each covariance type once (the i-th with the i-th)
    (init, cov_type) if i == j else pytest.param(init, cov_type, marks=pytest.mark.slow)
    for i, init in enumerate(gmm.INITS) for j, cov_type in enumerate(COV_TYPES)])
def test_every_init_and_type_fits_separated_clusters(init, cov_type):
  x = blobs(seed=1, dtype=np.float32, scale=8.0)
  result = gmm.fit(jax.random.key(0), x, 3, cov_type, init=init, n_init=2, max_iter=200)
  assert np.all(np.isfinite(np.asarray(result.log_likelihood)))
  assert result.params.means.dtype == jnp.float32
  np.testing.assert_allclose(jnp.sum(result.params.weights), 1.0, rtol=1e-5)
  if init != "random":  # uniform random responsibilities start at a symmetric saddle
    labels = np.asarray(gmm.map_latent(result.params, x))
    truth = np.repeat(np.arange(3), 150)
    agree = max(np.mean(labels == perm[truth]) for perm in
                map(np.array, [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]))
    assert agree > 0.95


def test_max_iter_zero_returns_initial_params():
  x = blobs(dtype=np.float32)
  p0 = random_params(0, 3, 3, "diag", np.float32)
  result = gmm.fit(jax.random.key(0), x, 3, "diag", init=p0, max_iter=0)
  assert int(result.n_iter) == 0 and result.log_likelihood.shape == (0,)
  np.testing.assert_allclose(result.params.means, p0.means, rtol=1e-6, atol=1e-6)


def test_vmap_over_datasets_and_keys():
  xs = np.stack([blobs(seed=s, n_per=40, d=2, dtype=np.float32) for s in range(3)])
  keys = jax.random.split(jax.random.key(0), 3)
  fit = lambda k, x: gmm.fit(k, x, 3, "full", init="random_from_data", max_iter=20)
  batched = jax.vmap(fit)(keys, xs)
  assert batched.params.means.shape == (3, 3, 2)
  assert batched.log_likelihood.shape == (3, 20)
  for i in range(3):
    single = fit(keys[i], xs[i])
    np.testing.assert_allclose(batched.params.means[i], single.params.means, rtol=1e-4,
                               atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Degenerate data.


@pytest.mark.parametrize("cov_type", some_slow(("full", "diag")))
def test_degenerate_data_never_nan(cov_type):
  rng = np.random.default_rng(0)
  duplicated = np.repeat(rng.normal(size=(6, 3)).astype(np.float32), 20, axis=0)
  constant = np.ones((40, 3), np.float32)
  wide = rng.normal(size=(200, 64)).astype(np.float32) * 30 + 100
  dup64 = np.repeat(rng.normal(size=(20, 64)).astype(np.float32) * 100, 10, axis=0)
  for x, k in ((duplicated, 4), (constant, 4), (wide, 4), (dup64, 4)):
    result = gmm.fit(jax.random.key(1), x, k, cov_type, init="random_from_data", max_iter=30)
    for leaf in jax.tree.leaves(result):
      assert np.all(np.isfinite(np.asarray(leaf, np.float64)))


@pytest.mark.parametrize("cov_type", some_slow(("full", "diag")))
def test_degenerate_data_with_kmeans_init(cov_type):
  x = np.repeat(np.random.default_rng(0).normal(size=(20, 64)).astype(np.float32) * 100, 10, 0)
  result = gmm.fit(jax.random.key(1), x, 4, cov_type, max_iter=30)
  assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(result))


def test_component_that_loses_all_points_stays_finite(x64):
  x = np.concatenate([np.random.default_rng(0).normal(size=(100, 2)),
                      np.random.default_rng(1).normal(size=(100, 2)) + 10])
  # Third component far away with negligible weight: it gets no responsibility at all.
  p0 = gmm.GMMParams(jnp.array([0.5, 0.5 - 1e-12, 1e-12]), jnp.array([[0., 0.], [10., 10.],
                                                                       [1e4, 1e4]]),
                     jnp.tile(jnp.eye(2), (3, 1, 1)), "full")
  result = gmm.fit(jax.random.key(0), x, 3, init=p0, max_iter=20)
  assert np.all(np.isfinite(np.asarray(result.params.covariances)))
  assert float(result.params.weights[2]) < 1e-10
  np.testing.assert_allclose(result.params.covariances[2], 1e-6 * np.eye(2), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Bad input.


def _good():
  return blobs(dtype=np.float32)


@pytest.mark.parametrize("make_call, match", [
    (lambda x: gmm.fit(jax.random.key(0), np.where(np.arange(x.size).reshape(x.shape) == 5,
                                                   np.nan, x), 3), "NaN"),
    (lambda x: gmm.fit(jax.random.key(0), np.where(np.arange(x.size).reshape(x.shape) == 5,
                                                   np.inf, x), 3), "NaN or infinite"),
    (lambda x: gmm.fit(jax.random.key(0), x[:, 0], 3), "2-D"),
    (lambda x: gmm.fit(jax.random.key(0), x[:2], 3), "at least as many points"),
    (lambda x: gmm.fit(jax.random.key(0), x, 0), "num_components"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, reg_covar=-1.0), "reg_covar"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, max_iter=-1), "max_iter"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, tol=-1.0), "tol"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, n_init=0), "n_init"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, covariance_type="banana"), "covariance_type"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, init="banana"), "init"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, sample_weight=np.ones(5)), "sample_weight"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, sample_weight=-np.ones(len(x))),
     "sample_weight"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, init=random_params(0, 3, 3, "full", np.float32)
                       .replace(weights=jnp.array([0.5, 0.6, -0.1]))), "non-negative"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, init=random_params(0, 3, 3, "full", np.float32)
                       .replace(weights=jnp.array([0.5, 0.6, 0.1]))), "sum to one"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, init=random_params(0, 3, 3, "full", np.float32)
                       .replace(covariances=-jnp.tile(jnp.eye(3), (3, 1, 1)))),
     "positive definite"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, init=random_params(0, 3, 3, "full", np.float32)
                       .replace(covariances=jnp.tile(jnp.array([[1., 2., 0.], [0., 1., 0.],
                                                                [0., 0., 1.]]), (3, 1, 1)))),
     "symmetric"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, "diag",
                       init=random_params(0, 3, 3, "diag", np.float32)
                       .replace(covariances=jnp.zeros((3, 3)))), "strictly positive"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, init=random_params(0, 3, 2, "full", np.float32)),
     "features"),
    (lambda x: gmm.fit(jax.random.key(0), x, 2, init=random_params(0, 3, 3, "full", np.float32)),
     "components"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, "diag",
                       init=random_params(0, 3, 3, "full", np.float32)), "covariance_type"),
    (lambda x: gmm.fit(jax.random.key(0), x, 3, "full",
                       init=random_params(0, 3, 3, "full", np.float32)
                       .replace(covariances=jnp.ones((3, 3)))), "shape"),
    (lambda x: gmm.log_joint(random_params(0, 3, 2, "full", np.float32), x), "shape"),
    (lambda x: gmm.sample_given(jax.random.key(0), random_params(0, 3, 3, "full", np.float32),
                                jnp.array([0, 5])), "component indices"),
    (lambda x: gmm.e_step(random_params(0, 3, 3, "full", np.float32), np.full_like(x, np.nan)),
     "NaN"),
])
def test_bad_input_raises_value_error(make_call, match):
  with pytest.raises(ValueError, match=match):
    make_call(_good())


def test_ill_defined_covariance_raises_instead_of_nan():
  x = np.repeat(np.eye(3, dtype=np.float32), 5, axis=0)
  with pytest.raises(ValueError, match="reg_covar"):
    gmm.fit(jax.random.key(0), x, 3, reg_covar=0.0, init="random_from_data")


@pytest.mark.parametrize("cov_type", some_slow(("full",), ["full", "diag"]))
def test_fit_continues_its_own_result(cov_type):
  # Each call centres the data and maps the means back, so blocks equal one fit up to rounding.
  x = blobs(dtype=np.float32)
  key = jax.random.key(0)
  full = gmm.fit(key, x, 3, cov_type, init="random", max_iter=25, tol=1e-4)
  assert int(full.n_iter) > 6
  part = gmm.fit(key, x, 3, cov_type, init="random", max_iter=3, tol=1e-4)
  while not bool(part.converged) and int(part.n_iter) < 25:
    part = gmm.fit(key, x, 3, cov_type, init=part, max_iter=min(int(part.n_iter) + 3, 25),
                   tol=1e-4)
  assert int(part.n_iter) == int(full.n_iter) and bool(part.converged) == bool(full.converged)
  np.testing.assert_allclose(part.log_likelihood, full.log_likelihood, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(part.params), jax.tree.leaves(full.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  again = gmm.fit(key, x, 3, cov_type, init=full, max_iter=25, tol=1e-4)  # nothing left to do
  assert int(again.n_iter) == int(full.n_iter)

