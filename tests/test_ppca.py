"""Tests for lvmjax.ppca against float64 references (scipy, scikit-learn, brute force)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA, FactorAnalysis

from lvmjax import ppca


def _random_params(rng, d=6, l=2, fa=False):
  weight = rng.normal(size=(d, l))
  mean = rng.normal(size=d)
  noise = rng.uniform(0.2, 1.5, size=d) if fa else np.asarray(0.7)
  return ppca.PPCAParams(jnp.asarray(weight), jnp.asarray(mean), jnp.asarray(noise))


def _data(rng, n=400, d=6, l=2, fa=True):
  params = _random_params(rng, d, l, fa)
  z = rng.normal(size=(n, l))
  noise = rng.normal(size=(n, d)) * np.sqrt(np.broadcast_to(np.asarray(params.noise_variance), d))
  return z @ np.asarray(params.weight).T + np.asarray(params.mean) + noise


@pytest.mark.parametrize("fa", [False, True])
def test_log_marginal_matches_scipy(x64, strict_promotion, fa):
  rng = np.random.default_rng(0)
  params = _random_params(rng, fa=fa)
  x = rng.normal(size=(20, 6)) * 2
  cov = np.asarray(params.weight) @ np.asarray(params.weight).T + np.diag(
      np.broadcast_to(np.asarray(params.noise_variance), 6))
  expected = stats.multivariate_normal(np.asarray(params.mean), cov).logpdf(x)
  np.testing.assert_allclose(ppca.log_marginal(params, x), expected, rtol=1e-10)
  np.testing.assert_allclose(ppca.covariance(params), cov, rtol=1e-12)


def test_log_marginal_matches_sklearn_pca(x64):
  rng = np.random.default_rng(1)
  x = _data(rng, fa=False)
  pca = PCA(n_components=2).fit(x)
  weight = pca.components_.T * np.sqrt(pca.explained_variance_ - pca.noise_variance_)
  params = ppca.PPCAParams(jnp.asarray(weight), jnp.asarray(pca.mean_),
                           jnp.asarray(pca.noise_variance_))
  np.testing.assert_allclose(ppca.log_marginal(params, x), pca.score_samples(x), rtol=1e-10)


def test_log_marginal_matches_sklearn_factor_analysis(x64):
  rng = np.random.default_rng(2)
  x = _data(rng, fa=True)
  fa = FactorAnalysis(n_components=2, random_state=0).fit(x)
  params = ppca.PPCAParams(jnp.asarray(fa.components_.T), jnp.asarray(fa.mean_),
                           jnp.asarray(fa.noise_variance_))
  np.testing.assert_allclose(ppca.log_marginal(params, x), fa.score_samples(x), rtol=1e-10)


def test_fit_ppca_matches_sklearn_covariance(x64):
  rng = np.random.default_rng(3)
  x = _data(rng, fa=False)
  n = x.shape[0]
  params = ppca.fit_ppca(x, 2)
  pca = PCA(n_components=2).fit(x)
  # scikit-learn uses the unbiased 1/(N-1) covariance; the ML solution uses 1/N.
  np.testing.assert_allclose(ppca.covariance(params), pca.get_covariance() * (n - 1) / n,
                             rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(params.noise_variance, pca.noise_variance_ * (n - 1) / n, rtol=1e-9)
  np.testing.assert_allclose(params.mean, x.mean(0), rtol=1e-12)


def test_closed_form_is_em_fixed_point(x64):
  rng = np.random.default_rng(4)
  x = _data(rng, fa=False)
  params = ppca.fit_ppca(x, 2)
  stepped = ppca.em_step(params, x, model="ppca")
  np.testing.assert_allclose(stepped.weight, params.weight, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(stepped.noise_variance, params.noise_variance, rtol=1e-8)


def test_em_converges_to_closed_form(x64):
  rng = np.random.default_rng(5)
  x = _data(rng, fa=False)
  closed = ppca.fit_ppca(x, 2)
  result = ppca.fit_em(jax.random.key(0), x, 2, model="ppca", max_iter=2000, tol=1e-12)
  assert bool(result.converged)
  np.testing.assert_allclose(ppca.covariance(result.params), ppca.covariance(closed),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(result.params.noise_variance, closed.noise_variance, rtol=1e-6)
  ll = result.log_likelihood[int(result.n_iter) - 1]
  np.testing.assert_allclose(ll, ppca.log_marginal(closed, x).mean(), rtol=1e-9)


@pytest.mark.parametrize("model", ["ppca", "fa"])
def test_em_log_likelihood_never_decreases(x64, model):
  rng = np.random.default_rng(6)
  x = _data(rng, fa=True)
  result = ppca.fit_em(jax.random.key(1), x, 2, model=model, max_iter=200, tol=0.0)
  hist = np.asarray(result.log_likelihood[:int(result.n_iter)])
  assert len(hist) == 200 and np.all(np.isfinite(hist))
  assert np.all(np.diff(hist) >= -1e-10), np.diff(hist).min()
  # the recorded value is the exact mean log-likelihood of the params entering the iteration
  last = ppca.em_step(ppca.em_step(result.params, x, model), x, model)
  assert ppca.log_marginal(last, x).mean() >= hist[-1] - 1e-10


def test_fa_em_reaches_sklearn_likelihood(x64):
  # a well-posed case (no Heywood noise variance drifting to 0, where EM crawls)
  rng = np.random.default_rng(8)
  x = _data(rng, n=2000, fa=True)
  fa = FactorAnalysis(n_components=2, tol=1e-8, max_iter=20000, random_state=0).fit(x)
  result = ppca.fit_em(None, x, 2, model="fa", init="pca", max_iter=5000, tol=1e-11)
  assert bool(result.converged)
  ours = float(ppca.log_marginal(result.params, x).mean())
  assert ours == pytest.approx(fa.score(x), abs=1e-5)
  sk_cov = fa.get_covariance()
  np.testing.assert_allclose(ppca.covariance(result.params), sk_cov, rtol=1e-4, atol=1e-4)


def test_fit_em_eager_equals_jit(x64):
  rng = np.random.default_rng(8)
  x = _data(rng, n=100, fa=True)
  jitted = ppca.fit_em(jax.random.key(2), x, 2, model="fa", max_iter=5, tol=0.0)
  with jax.disable_jit():
    eager = ppca.fit_em(jax.random.key(2), x, 2, model="fa", max_iter=5, tol=0.0)
  np.testing.assert_allclose(eager.params.weight, jitted.params.weight, rtol=1e-9)
  np.testing.assert_allclose(eager.log_likelihood, jitted.log_likelihood, rtol=1e-11)
  assert int(eager.n_iter) == int(jitted.n_iter) == 5


@pytest.mark.parametrize("fa", [False, True])
def test_posterior_matches_gaussian_conditioning(x64, fa):
  rng = np.random.default_rng(9)
  params = _random_params(rng, fa=fa)
  x = rng.normal(size=(7, 6))
  w = np.asarray(params.weight)
  cov_x = w @ w.T + np.diag(np.broadcast_to(np.asarray(params.noise_variance), 6))
  # joint of (z, x): [[I, W^T], [W, C]]; condition on x
  gain = np.linalg.solve(cov_x, w).T                     # W^T C^{-1}
  expected_mean = (x - np.asarray(params.mean)) @ gain.T
  expected_cov = np.eye(2) - gain @ w
  mean, cov = ppca.posterior(params, x)
  np.testing.assert_allclose(mean, expected_mean, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(cov, expected_cov, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(ppca.map_latent(params, x), expected_mean, rtol=1e-10, atol=1e-12)
  # Bayes: log p(z|x) = log p(x, z) - log p(x)
  z = rng.normal(size=(7, 2))
  log_post = np.array([stats.multivariate_normal(m, expected_cov).logpdf(zi)
                       for m, zi in zip(expected_mean, z)])
  np.testing.assert_allclose(ppca.log_joint(params, x, z) - ppca.log_marginal(params, x),
                             log_post, rtol=1e-9)


def test_sample_moments(x64):
  rng = np.random.default_rng(10)
  params = _random_params(rng, fa=True)
  x, z = ppca.sample(jax.random.key(3), params, 200_000)
  assert x.shape == (200_000, 6) and z.shape == (200_000, 2)
  np.testing.assert_allclose(np.cov(np.asarray(x).T), ppca.covariance(params), atol=0.05)
  np.testing.assert_allclose(np.asarray(x).mean(0), params.mean, atol=0.02)
  # x - (W z + mu) is the noise: its variance is Psi, independent of z
  resid = np.asarray(x) - np.asarray(z) @ np.asarray(params.weight).T - np.asarray(params.mean)
  np.testing.assert_allclose(resid.var(0), params.noise_variance, rtol=0.03)
  x_given = ppca.sample_given(jax.random.key(4), params, jnp.zeros((50_000, 2)))
  np.testing.assert_allclose(np.asarray(x_given).mean(0), params.mean, atol=0.03)


def test_float32_default():
  x = np.random.default_rng(11).normal(size=(50, 4)).astype(np.float32)
  params = ppca.fit_ppca(x, 1)
  assert params.weight.dtype == jnp.float32
  assert ppca.log_marginal(params, x).dtype == jnp.float32
  result = ppca.fit_em(jax.random.key(0), x, 1, max_iter=5)
  assert result.params.weight.dtype == jnp.float32


def test_bad_input_raises():
  rng = np.random.default_rng(12)
  x = rng.normal(size=(30, 4)).astype(np.float32)
  params = ppca.fit_ppca(x, 2)
  bad = x.copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    ppca.fit_ppca(bad, 2)
  with pytest.raises(ValueError, match="NaN"):
    ppca.log_marginal(params, bad)
  with pytest.raises(ValueError, match="num_latents"):
    ppca.fit_ppca(x, 4)
  with pytest.raises(ValueError, match="num_latents"):
    ppca.fit_em(jax.random.key(0), x, 0)
  with pytest.raises(ValueError, match="features"):
    ppca.log_marginal(params, x[:, :3])
  with pytest.raises(ValueError, match="2-D"):
    ppca.log_marginal(params, x[0])
  with pytest.raises(ValueError, match="model"):
    ppca.fit_em(jax.random.key(0), x, 2, model="pca")
  with pytest.raises(ValueError, match="key"):
    ppca.fit_em(None, x, 2)
  with pytest.raises(ValueError, match="noise_variance"):
    ppca.log_marginal(params._replace(noise_variance=jnp.asarray(-1.0)), x)
  with pytest.raises(ValueError, match="noise_variance"):
    ppca.log_marginal(params._replace(noise_variance=jnp.ones(3)), x)
  with pytest.raises(ValueError, match="z must have shape"):
    ppca.sample_given(jax.random.key(0), params, jnp.zeros((3, 5)))


def test_sample_takes_params_then_key_and_the_old_order_too():
  params = ppca.PPCAParams(jnp.ones((4, 2)), jnp.zeros(4), jnp.asarray(0.5))
  key = jax.random.key(7)
  for a, b in zip(ppca.sample(params, key, 20), ppca.sample(key, params, 20)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ppca.sample_given(params, key, jnp.ones((3, 2))),
                                ppca.sample_given(key, params, jnp.ones((3, 2))))
