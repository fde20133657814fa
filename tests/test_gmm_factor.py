"""Mixtures of factor analysers / PPCA (lvmjax.gmm.factor) against float64 references: scipy's
full-covariance Gaussian density, an EM step written from Ghahramani & Hinton's and Tipping &
Bishop's equations with explicit D x D matrices, the "diag"/"spherical" GMM (rank 0), lvmjax.ppca
and scikit-learn (K = 1); and the mixture machinery (chunks, weights, restarts, streaming, mesh)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA, FactorAnalysis

from lvmjax import gmm, mixture, ppca
from lvmjax.gmm import factor
from tests import processes

NOISES = ("diagonal", "isotropic")


def _params(rng, k=3, d=6, q=2, noise="diagonal"):
  nshape = (k, d) if noise == "diagonal" else (k,)
  w = rng.uniform(0.5, 1.5, k)
  return factor.FactorParams(jnp.asarray(w / w.sum()), jnp.asarray(rng.normal(size=(k, d)) * 3),
                             jnp.asarray(rng.normal(size=(k, d, q))),
                             jnp.asarray(rng.uniform(0.3, 1.5, nshape)))


def _data(n=300, seed=0, k=3, d=6, q=2):
  rng = np.random.default_rng(seed)
  truth = _params(rng, k, d, q)
  x, _, _ = factor.sample(truth, jax.random.key(seed), n)
  return np.asarray(x, np.float64)


# ---- Densities -------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("q", [0, 2])
def test_density_equals_full_covariance_density(x64, strict_promotion, noise, q):
  rng = np.random.default_rng(1)
  p = _params(rng, q=q, noise=noise)
  x = rng.normal(size=(40, 6)) * 3
  cov = np.asarray(p.covariances())
  psi = np.broadcast_to(np.asarray(p.noise).reshape(3, -1), (3, 6))
  w = np.asarray(p.factors)
  np.testing.assert_allclose(cov, w @ np.swapaxes(w, 1, 2) + psi[:, :, None] * np.eye(6),
                             rtol=1e-12)
  ref = np.stack([np.log(p.weights[k]) + stats.multivariate_normal(p.means[k], cov[k]).logpdf(x)
                  for k in range(3)], axis=1)
  np.testing.assert_allclose(factor.log_joint(p, x), ref, rtol=1e-10)
  np.testing.assert_allclose(factor.log_marginal(p, x), np.logaddexp.reduce(ref, axis=1),
                             rtol=1e-10)
  resp = np.exp(ref - np.logaddexp.reduce(ref, axis=1, keepdims=True))
  np.testing.assert_allclose(factor.posterior(p, x), resp, rtol=1e-9, atol=1e-14)
  np.testing.assert_array_equal(factor.map_latent(p, x), np.argmax(ref, axis=1))
  g = factor.to_gmm_params(p)
  assert g.covariance_type == "full"
  np.testing.assert_allclose(gmm.log_joint(g, x), ref, rtol=1e-10)
  # batch shapes (..., D) as in gmm
  assert factor.log_joint(p, x.reshape(4, 10, 6)).shape == (4, 10, 3)


def test_latent_posterior_equals_gaussian_conditioning(x64):
  rng = np.random.default_rng(2)
  p = _params(rng, noise="diagonal")
  x = rng.normal(size=(7, 6))
  mean, cov = factor.latent_posterior(p, x)
  assert mean.shape == (7, 3, 2) and cov.shape == (3, 2, 2)
  for k in range(3):
    w, sigma = np.asarray(p.factors[k]), np.asarray(p.covariances()[k])
    gain = w.T @ np.linalg.inv(sigma)  # p(z | x, k) from the joint Gaussian of (z, x)
    np.testing.assert_allclose(mean[:, k], (x - np.asarray(p.means[k])) @ gain.T, rtol=1e-9)
    np.testing.assert_allclose(cov[k], np.eye(2) - gain @ w, rtol=1e-9, atol=1e-12)


def test_sample_moments(x64):
  p = _params(np.random.default_rng(3), noise="isotropic")
  x, k, z = factor.sample(p, jax.random.key(0), 20000)
  assert x.shape == (20000, 6) and k.shape == (20000,) and z.shape == (20000, 2)
  np.testing.assert_allclose(np.bincount(np.asarray(k)) / 20000, p.weights, atol=0.01)
  for j in range(3):
    xs = np.asarray(x)[np.asarray(k) == j]
    np.testing.assert_allclose(xs.mean(0), p.means[j], atol=0.12)
    np.testing.assert_allclose(np.cov(xs.T), p.covariances()[j], atol=0.35)


# ---- EM against a D x D reference written from the papers' equations ------------------------


def _start(noise):
  start = _params(np.random.default_rng(5), noise=noise)
  return start._replace(noise=start.noise * 4)


def _fit(x, noise, init, **kw):
  """The reference test's configuration (one compilation serves the tests that share it)."""
  return factor.fit(jax.random.key(0), x, 3, 2, noise=noise, init=init, **{
      "max_iter": 12, "tol": 0.0, "reg_covar": 1e-6, "chunk_size": 64, **kw})


def _reference_step(p, x, s, reg, fix_means=False):
  """One EM step with explicit D x D covariances and inverses (numpy, float64); ``fix_means``:
  the diagonal model's regression without intercept about the fixed means."""
  weights, means, facs = (np.asarray(a, np.float64) for a in p[:3])
  k, d, q = facs.shape
  cov = np.asarray(p.covariances())
  lj = np.log(weights) + np.stack(
      [stats.multivariate_normal(means[j], cov[j]).logpdf(x) for j in range(k)], 1)
  lpx = np.logaddexp.reduce(lj, axis=1)
  r = s[:, None] * np.exp(lj - lpx[:, None])
  counts = r.sum(0) + 10 * np.finfo(np.float64).eps
  new_means, new_w, new_noise = [], [], []
  for j in range(k):
    rj, w = r[:, j], facs[j]
    if p.noise_type == "diagonal":  # Ghahramani & Hinton, augmented z~ = (z, 1)
      beta = w.T @ np.linalg.inv(cov[j])
      ez = (x - means[j]) @ beta.T
      ezz = counts[j] * (np.eye(q) - beta @ w) + (rj[:, None] * ez).T @ ez
      sez = rj @ ez
      big = np.block([[ezz, sez[:, None]], [sez[None, :], np.array([[counts[j]]])]])
      ezt = np.concatenate([ez, np.ones((len(x), 1))], axis=1)
      if fix_means:
        xc = x - means[j]
        wj = ((rj[:, None] * xc).T @ ez) @ np.linalg.inv(ezz)
        wmu = np.concatenate([wj, means[j][:, None]], axis=1)
        psi = np.diag((rj[:, None] * xc).T @ xc - wj @ ((rj[:, None] * ez).T @ xc)) / counts[j]
      else:
        wmu = ((rj[:, None] * x).T @ ezt) @ np.linalg.inv(big)
        psi = np.diag((rj[:, None] * x).T @ x - wmu @ ((rj[:, None] * ezt).T @ x)) / counts[j]
      new_w.append(wmu[:, :q]), new_means.append(wmu[:, q]), new_noise.append(psi + reg)
    else:  # Tipping & Bishop (1999), eqs. 3.x: mean, then W and sigma^2 from S_k
      mu = rj @ x / counts[j]
      sk = (rj[:, None] * (x - mu)).T @ (x - mu) / counts[j]
      s2 = float(p.noise[j])
      m = s2 * np.eye(q) + w.T @ w
      wn = sk @ w @ np.linalg.inv(s2 * np.eye(q) + np.linalg.inv(m) @ w.T @ sk @ w)
      new_noise.append(np.trace(sk - sk @ w @ np.linalg.inv(m) @ wn.T) / d + reg)
      new_w.append(wn), new_means.append(mu)
  new = factor.FactorParams(counts / counts.sum(), np.array(new_means), np.array(new_w),
                            np.array(new_noise))
  return new, float(np.sum(s * lpx) / np.sum(s))


@pytest.mark.parametrize("noise", NOISES)
def test_fit_equals_reference_em_iteration_by_iteration(x64, noise):
  x = _data()
  s = np.random.default_rng(4).uniform(0.5, 2.0, len(x))
  res = _fit(x, noise, _start(noise), sample_weight=s)
  p, history = _start(noise), []
  for _ in range(12):
    p, ll = _reference_step(p, x, s, 1e-6)
    history.append(ll)
  assert int(res.n_iter) == 12
  np.testing.assert_allclose(res.log_likelihood, history, rtol=1e-10)
  assert np.all(np.diff(history) >= -1e-10) and history[-1] > history[0] + 0.1  # EM ascends
  for got, want in zip(res.params, p):
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("noise", [pytest.param("diagonal", marks=pytest.mark.slow), "isotropic"])
def test_log_likelihood_never_decreases_from_builtin_init(noise):
  x = _data(n=400, seed=6).astype(np.float32)
  res = factor.fit(jax.random.key(1), x, 3, 2, noise=noise, max_iter=40, tol=1e-6)
  ll = np.asarray(res.log_likelihood)
  assert np.all(np.diff(ll) >= -1e-4 * np.abs(ll[1:])), np.diff(ll).min()
  assert res.params.factors.dtype == jnp.float32 and np.isfinite(float(res.lower_bound))


@pytest.mark.parametrize("noise,fixed", [("diagonal", ("means", "weights")),
                                         ("isotropic", ("factors",))])
def test_fixed_fields_stay_bit_for_bit_and_em_still_ascends(x64, noise, fixed):
  x = _data()
  start = _start(noise)
  res = _fit(x, noise, start, fixed=fixed, max_iter=15)
  for name in fixed:
    np.testing.assert_array_equal(getattr(res.params, name), getattr(start, name))
  free = [f for f in factor.FactorParams._fields if f not in fixed]
  assert all(not np.allclose(getattr(res.params, f), getattr(start, f)) for f in free)
  ll = np.asarray(res.log_likelihood)
  assert np.all(np.diff(ll) >= -1e-10) and ll[-1] > ll[0] + 0.1
  if "means" in fixed:  # the conditional M-step against the D x D reference
    p = start
    for _ in range(15):
      p, _ = _reference_step(p, x, np.ones(len(x)), 1e-6, fix_means=True)
      p = p._replace(weights=start.weights)
    for got, want in zip(res.params, p):
      np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


# ---- Special cases: rank 0 is the diag / spherical GMM, K = 1 is PPCA / factor analysis -----


@pytest.mark.parametrize("noise,cov_type", [("diagonal", "diag"), ("isotropic", "spherical")])
def test_rank_zero_equals_gmm(x64, noise, cov_type):
  x = _data(seed=7)
  res = factor.fit(jax.random.key(2), x, 3, 0, noise=noise, init="random_from_data",
                   max_iter=30, tol=1e-9)
  ref = gmm.fit(jax.random.key(2), x, 3, cov_type, init="random_from_data", max_iter=30,
                tol=1e-9)
  assert int(res.n_iter) == int(ref.n_iter)
  np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-10)
  np.testing.assert_allclose(res.params.weights, ref.params.weights, rtol=1e-8)
  np.testing.assert_allclose(res.params.means, ref.params.means, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(res.params.noise, ref.params.covariances, rtol=1e-8)
  assert res.params.factors.shape == (3, 6, 0)


@pytest.mark.parametrize("model,noise", [("ppca", "isotropic"), ("fa", "diagonal")])
def test_one_component_equals_ppca_em_and_sklearn(x64, model, noise):
  rng = np.random.default_rng(8)
  x = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 5)) + rng.normal(size=5)
  x = x + rng.normal(size=(300, 5)) * rng.uniform(0.3, 1.0, 5)  # a factor-analysis sample
  w0 = rng.normal(size=(5, 2))
  var = x.var(0)

  def fit(weight, noise0, mean=x.mean(0)):
    start = factor.FactorParams(jnp.ones(1), jnp.asarray(mean)[None], jnp.asarray(weight)[None],
                                jnp.asarray(noise0)[None])
    return factor.fit(jax.random.key(0), x, 1, 2, noise=noise, init=start, max_iter=25,
                      tol=0.0, reg_covar=0.0)

  noise0 = var.mean() if noise == "isotropic" else var
  ours = fit(w0, noise0)
  ref = ppca.fit_em(None, x, 2, model=model, init=ppca.PPCAParams(
      jnp.asarray(w0), jnp.asarray(x.mean(0)), jnp.asarray(noise0)), max_iter=25, tol=0.0,
                    min_noise_variance=0.0)
  np.testing.assert_allclose(ours.log_likelihood, ref.log_likelihood[:25], rtol=1e-10)
  np.testing.assert_allclose(ours.params.factors[0], ref.params.weight, rtol=1e-7, atol=1e-9)
  np.testing.assert_allclose(ours.params.noise[0], ref.params.noise_variance, rtol=1e-8)
  np.testing.assert_allclose(ours.params.means[0], x.mean(0), rtol=1e-9, atol=1e-12)
  # scikit-learn's maximum-likelihood fits are fixed points of our EM: started there, it stays.
  if model == "ppca":
    sk = PCA(n_components=2).fit(x)  # its covariance uses 1/(N-1): rescale to the ML one
    c = (len(x) - 1) / len(x)
    weight = sk.components_.T * np.sqrt(c * sk.explained_variance_ - c * sk.noise_variance_)
    at_ml = fit(weight, c * sk.noise_variance_, sk.mean_)
    closed = ppca.fit_ppca(x, 2)
    np.testing.assert_allclose(at_ml.log_likelihood[0],
                               jnp.mean(ppca.log_marginal(closed, x)), rtol=1e-12)
    np.testing.assert_allclose(at_ml.params.noise[0], closed.noise_variance, rtol=1e-9)
  else:
    sk = FactorAnalysis(n_components=2, tol=1e-12, max_iter=5000).fit(x)
    at_ml = fit(sk.components_.T, sk.noise_variance_, sk.mean_)
    np.testing.assert_allclose(at_ml.log_likelihood[0], sk.score(x), rtol=1e-12)
    np.testing.assert_allclose(at_ml.params.noise[0], sk.noise_variance_, rtol=1e-4)
  np.testing.assert_allclose(at_ml.log_likelihood, at_ml.log_likelihood[0], rtol=1e-9)
  cov = at_ml.params.covariances()[0]
  np.testing.assert_allclose(cov, sk.get_covariance() * (c if model == "ppca" else 1),
                             rtol=1e-4, atol=1e-6)


# ---- The mixture machinery --------------------------------------------------------------------


def test_integer_weights_equal_repeated_rows_and_chunks_change_nothing(x64):
  x = _data()
  reps = np.random.default_rng(10).integers(0, 4, len(x))
  a = _fit(x, "diagonal", _start("diagonal"), sample_weight=reps)
  b = _fit(np.repeat(x, reps, axis=0), "diagonal", _start("diagonal"))
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)
  fam = factor.FactorFamily("diagonal", 2)
  whole = mixture.e_step(fam, _start("diagonal"), x, reps.astype(float), chunk_size=1000)
  for chunk in (1, 17):
    part = mixture.e_step(fam, _start("diagonal"), x, reps.astype(float), chunk_size=chunk)
    for u, v in zip(part, whole):
      np.testing.assert_allclose(u, v, rtol=1e-11, atol=1e-11)


@pytest.mark.slow
def test_restarts_are_a_vmap_and_return_the_best(x64):
  x = _data(n=200, seed=12)
  key = jax.random.key(3)
  best = factor.fit(key, x, 3, 1, init="random", n_init=3, max_iter=20)
  singles = [factor.fit(k, x, 3, 1, init="random", max_iter=20) for k in jax.random.split(key, 3)]
  scores = [float(s.lower_bound) for s in singles]
  assert len(set(np.round(scores, 6))) > 1
  want = singles[int(np.argmax(scores))]
  for u, v in zip(jax.tree.leaves(best), jax.tree.leaves(want)):
    np.testing.assert_allclose(u, v, rtol=1e-8, atol=1e-10)


def test_streaming_and_blocks_equal_in_memory(x64):
  x = _data()
  mem = _fit(x, "isotropic", _start("isotropic"))

  def batches():
    for i in range(0, len(x), 70):
      yield x[i:i + 70], None

  res = mixture.fit_streaming(factor.FactorFamily("isotropic", 2), _start("isotropic"), batches,
                              6, max_iter=12, tol=0.0, batch_size=70, chunk_size=16)
  assert int(res.n_iter) == int(mem.n_iter) == 12
  np.testing.assert_allclose(res.log_likelihood, mem.log_likelihood, rtol=1e-11)
  for u, v in zip(res.params, mem.params):
    np.testing.assert_allclose(u, v, rtol=1e-8, atol=1e-10)
  part = _fit(x, "isotropic", _start("isotropic"), max_iter=6)
  part = _fit(x, "isotropic", part)  # continues: 6 more of the 12 (the same compiled loop)
  assert int(part.n_iter) == 12
  for u, v in zip(jax.tree.leaves(part), jax.tree.leaves(mem)):
    np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-11)


@pytest.mark.slow  # eager op-by-op EM: ~15 s; the same functions run eagerly in the density tests
def test_eager_equals_jit(x64):
  x = _data(n=90)
  xs, ws = mixture.chunk_rows(jnp.asarray(x), jnp.ones(len(x)), 40)
  fam = factor.FactorFamily("diagonal", 2)
  jitted = jax.jit(lambda p: mixture.run_em(fam, p, xs, ws, tol=1e-8, max_iter=3))(
      _start("diagonal"))
  with jax.disable_jit():
    eager = mixture.run_em(fam, _start("diagonal"), xs, ws, tol=1e-8, max_iter=3)
  for u, v in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-11)


def _mesh_main():
  """Run in a fresh Python with 4 CPU devices: the fit on a mesh equals the one-device fit."""
  assert jax.device_count() == 4, jax.devices()
  from lvmjax import sharding  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    x = _data(n=301, seed=15)  # not a multiple of 4: padding rows must not count
    s = np.random.default_rng(16).uniform(0.5, 2.0, len(x))
    a = factor.fit(jax.random.key(1), x, 3, 2, init="random_from_data", n_init=2,
                   sample_weight=s, tol=1e-8, chunk_size=25, max_iter=40)
    b = factor.fit(jax.random.key(1), x, 3, 2, init="random_from_data", n_init=2,
                   sample_weight=s, tol=1e-8, chunk_size=25, max_iter=40,
                   mesh=sharding.data_mesh())
    # Every leaf of the two results; booleans (converged) compared as numbers.
    diff = max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  print("RESULT " + json.dumps({"n_iter": [int(a.n_iter), int(b.n_iter)], "diff": diff}))


@pytest.mark.slow
def test_mesh_of_four_cpu_devices_equals_one_device():
  out = processes.on_cpu_devices("test_gmm_factor", "_mesh_main", 4, timeout=600)
  assert out["n_iter"][0] == out["n_iter"][1] and out["diff"] < 1e-9, out


# ---- Bad input -------------------------------------------------------------------------------


def test_bad_input_is_a_value_error_that_says_what_to_do():
  x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="rank must be smaller"):
    factor.fit(key, x, 2, 4)
  with pytest.raises(ValueError, match="rank must be >= 0"):
    factor.fit(key, x, 2, -1)
  with pytest.raises(ValueError, match="rank must be an integer"):
    factor.fit(key, x, 2, 1.5)
  with pytest.raises(ValueError, match="Unknown noise"):
    factor.fit(key, x, 2, 1, noise="full")
  with pytest.raises(ValueError, match="Unknown init"):
    factor.fit(key, x, 2, 1, init="pca")
  with pytest.raises(ValueError, match="jax.random.key"):
    factor.fit(0, x, 2, 1)
  with pytest.raises(ValueError, match="num_components"):
    factor.fit(key, x[:1], 2, 1)
  with pytest.raises(ValueError, match="not fields of the parameters"):
    factor.fit(key, x, 2, 1, fixed=("covariances",))
  with pytest.raises(ValueError, match="init=gmm.factor.FactorParams"):
    factor.fit(key, x, 2, 1, fixed=("means",))
  p = _params(np.random.default_rng(1), k=2, d=4, q=1, noise="isotropic")
  with pytest.raises(ValueError, match="rank 1 with isotropic noise"):
    factor.fit(key, x, 2, 1, noise="diagonal", init=p)
  with pytest.raises(ValueError, match="noise variances must be finite and > 0"):
    factor.log_joint(p._replace(noise=-p.noise), x)
  with pytest.raises(ValueError, match=r"factors must have shape \(K, D, rank\)"):
    factor.log_joint(p._replace(factors=p.factors[0]), x)
  with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 4\)"):
    factor.log_marginal(p, x[:, :3])
