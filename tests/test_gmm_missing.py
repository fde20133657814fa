"""Missing data in the GMM, marginalised exactly (Ghahramani & Jordan 1994): the masked densities
against scipy on each row's observed entries, the EM step against a float64 NumPy reference of
the conditional moments, its invariants, and the mixture machinery (chunks, weights, restarts,
meshes, streaming, frozen fields) it runs on."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps
from scipy.special import logsumexp

from lvmjax import gmm
from lvmjax import mixture
from lvmjax import sharding
from tests import processes

COV_TYPES = gmm.COVARIANCE_TYPES


def _params(seed, k, d, cov_type, dtype=None):
  rng = np.random.default_rng(seed)
  w = rng.uniform(0.5, 1.5, size=k)
  a = rng.normal(size=(k, d, d))
  full = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)
  cov = {"full": full, "tied": full[0], "diag": rng.uniform(0.3, 2.0, size=(k, d)),
         "spherical": rng.uniform(0.3, 2.0, size=k)}[cov_type]
  return gmm.GMMParams(jnp.asarray(w / w.sum(), dtype), jnp.asarray(rng.normal(size=(k, d)) * 2,
                                                                     dtype),
                       jnp.asarray(cov, dtype), cov_type)


def _full(p):
  k, d = p.means.shape
  c = np.asarray(p.covariances, np.float64)
  return {"full": lambda: c, "tied": lambda: np.broadcast_to(c, (k, d, d)),
          "diag": lambda: np.stack([np.diag(v) for v in c]),
          "spherical": lambda: np.stack([v * np.eye(d) for v in c])}[p.covariance_type]()


def _remove(x, fraction, seed):
  """x with entries removed completely at random (NaN); every row keeps one entry."""
  rng = np.random.default_rng(seed)
  gone = rng.uniform(size=x.shape) < fraction
  gone[np.arange(len(x)), rng.integers(0, x.shape[1], len(x))] = False
  return np.where(gone, np.nan, x)


def _reference(p, x):
  """Float64 per row and component with scipy/NumPy: log p(x_o, z=k), the completed rows and
  the conditional covariances of the missing entries."""
  w, mu, covs = np.asarray(p.weights), np.asarray(p.means), _full(p)
  n, d = x.shape
  k = len(w)
  lj, xh, cc = np.zeros((n, k)), np.zeros((n, k, d)), np.zeros((n, k, d, d))
  for i in range(n):
    o = ~np.isnan(x[i])
    m = ~o
    for j in range(k):
      s = covs[j]
      lj[i, j] = np.log(w[j]) + sps.multivariate_normal(mu[j][o], s[np.ix_(o, o)]).logpdf(x[i][o])
      gain = s[np.ix_(m, o)] @ np.linalg.inv(s[np.ix_(o, o)])
      xh[i, j][o] = x[i][o]
      xh[i, j][m] = mu[j][m] + gain @ (x[i][o] - mu[j][o])
      cc[i, j][np.ix_(m, m)] = s[np.ix_(m, m)] - gain @ s[np.ix_(o, m)]
  return lj, xh, cc


def _reference_em_step(p, x, reg_covar):
  """One Ghahramani-Jordan EM step in float64: (new params as arrays, mean observed log-lik)."""
  lj, xh, cc = _reference(p, x)
  lp = logsumexp(lj, axis=1)
  r = np.exp(lj - lp[:, None])
  nk = r.sum(0)
  mu = np.einsum("nk,nkd->kd", r, xh) / nk[:, None]
  diff = xh - mu[None]
  s = np.einsum("nk,nkd,nke->kde", r, diff, diff) + np.einsum("nk,nkde->kde", r, cc)
  d = x.shape[1]
  cov = {"full": s / nk[:, None, None] + reg_covar * np.eye(d),
         "tied": s.sum(0) / nk.sum() + reg_covar * np.eye(d),
         "diag": np.einsum("kdd->kd", s) / nk[:, None] + reg_covar,
         "spherical": (np.einsum("kdd->kd", s) / nk[:, None]).mean(1) + reg_covar}[
             p.covariance_type]
  return (nk / nk.sum(), mu, cov), lp.mean()


# ---- Densities, posterior, imputation ---------------------------------------------------------


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_masked_densities_match_scipy_on_the_observed_entries(x64, cov_type):
  p = _params(0, 3, 4, cov_type)
  x = _remove(np.random.default_rng(1).normal(size=(25, 4)) * 2, 0.4, 2)
  mask = ~np.isnan(x)
  lj, xh, _ = _reference(p, x)
  np.testing.assert_allclose(gmm.log_joint(p, x, mask), lj, rtol=1e-10)
  np.testing.assert_allclose(gmm.log_marginal(p, x, mask), logsumexp(lj, axis=1), rtol=1e-10)
  post = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
  np.testing.assert_allclose(gmm.posterior(p, x, mask), post, rtol=1e-9, atol=1e-14)
  np.testing.assert_array_equal(gmm.map_latent(p, x, mask), np.argmax(lj, axis=1))
  # Batch shapes and a full mask: the ordinary densities.
  np.testing.assert_allclose(gmm.log_marginal(p, x.reshape(5, 5, 4), mask.reshape(5, 5, 4)),
                             logsumexp(lj, axis=1).reshape(5, 5), rtol=1e-10)
  full = np.nan_to_num(x)
  np.testing.assert_allclose(gmm.log_joint(p, full, np.ones_like(mask)), gmm.log_joint(p, full),
                             rtol=1e-12)
  # impute: the posterior-weighted mix of the per-component conditional means.
  expect = np.where(mask, x, np.einsum("nk,nkd->nd", post, xh))
  out = np.asarray(gmm.impute(p, x, mask))
  np.testing.assert_allclose(out, expect, rtol=1e-9, atol=1e-12)
  assert np.array_equal(out[mask], x[mask])


def test_sample_missing_draws_the_conditional(x64):
  """Observed entries stay; the draws of one row average to the conditional mean and their
  covariance is the mixture's conditional covariance."""
  p = _params(3, 2, 3, "full")
  row = np.array([[0.5, np.nan, np.nan]])
  mask = ~np.isnan(row)
  reps = np.repeat(row, 20000, axis=0)
  draws = np.asarray(gmm.sample_missing(p, jax.random.key(0), reps, np.repeat(mask, 20000, 0)))
  assert np.all(draws[:, 0] == 0.5) and np.all(np.isfinite(draws))
  lj, xh, cc = _reference(p, row)
  post = np.exp(lj[0] - logsumexp(lj[0]))
  mean = post @ xh[0]
  second = np.einsum("k,kde->de", post, cc[0] + np.einsum("kd,ke->kde", xh[0], xh[0]))
  cov = second - np.outer(mean, mean)
  se = np.sqrt(np.diag(cov)[1:] / len(draws))
  assert np.all(np.abs(draws[:, 1:].mean(0) - mean[1:]) < 5 * se)
  np.testing.assert_allclose(np.cov(draws[:, 1:].T), cov[1:, 1:], rtol=0.05, atol=0.02)
  again = gmm.sample_missing(p, jax.random.key(0), reps, np.repeat(mask, 20000, 0))
  np.testing.assert_array_equal(again, draws)


# ---- EM ---------------------------------------------------------------------------------------


def _mixture_data(n, seed=0, d=4, dtype=np.float64):
  p = _params(10, 3, d, "full")
  x, _ = gmm.sample(p, jax.random.key(seed), n)
  return np.asarray(x, dtype)  # float32 draws unless x64 is on


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_em_equals_reference_and_never_decreases(x64, cov_type):
  """Eight EM steps from the same start against the float64 reference, iteration by iteration;
  the recorded value is the observed-data log-likelihood, which never decreases."""
  x = _remove(_mixture_data(90), 0.3, 5)
  init = _params(4, 3, 4, cov_type)
  result = gmm.fit(jax.random.key(0), x, 3, cov_type, init=init, max_iter=8, tol=0.0,
                   missing="marginalize")
  p, history = init, []
  for _ in range(8):
    (w, mu, cov), ll = _reference_em_step(p, x, 1e-6)
    p = gmm.GMMParams(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(cov), cov_type)
    history.append(ll)
  np.testing.assert_allclose(result.log_likelihood, history, rtol=1e-10)
  for name in ("weights", "means", "covariances"):
    np.testing.assert_allclose(getattr(result.params, name), getattr(p, name), rtol=1e-8,
                               atol=1e-10)
  assert np.all(np.diff(history) >= -1e-12), np.diff(history)
  final = np.mean(gmm.log_marginal(result.params, x, ~np.isnan(x)))
  assert final >= history[-1] - 1e-12


@pytest.mark.parametrize("cov_type", ["full", "diag"])
def test_nothing_missing_equals_ordinary_em(x64, cov_type):
  x = _mixture_data(150)
  init = _params(4, 3, 4, cov_type)
  a = gmm.fit(jax.random.key(0), x, 3, cov_type, init=init, max_iter=8, tol=0.0,
              missing="marginalize")
  b = gmm.fit(jax.random.key(0), x, 3, cov_type, init=init, max_iter=8, tol=0.0)
  np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-10)
  for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(u, v, rtol=1e-8, atol=1e-10)


def test_beats_dropping_rows_and_mean_imputation():
  """30% of the entries removed completely at random from correlated clusters: on held-out rows
  (with entries missing too) the marginalising fit has the best observed-data likelihood."""
  rng = np.random.default_rng(0)
  d, k = 5, 3
  a = rng.normal(size=(k, d, d))
  truth = gmm.GMMParams(jnp.full((k,), 1 / k), jnp.asarray(rng.normal(size=(k, d)) * 3.0),
                        jnp.asarray(a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(d)), "full")
  x, _ = gmm.sample(truth, jax.random.key(1), 1000)
  x = np.asarray(x, np.float32)
  train, test = _remove(x[:600], 0.3, 2), _remove(x[600:], 0.3, 3)
  test_mask = ~np.isnan(test)
  score = lambda p: float(np.mean(gmm.log_marginal(p, test, test_mask)))  # noqa: E731
  ours = gmm.fit(jax.random.key(0), train, k, missing="marginalize").params
  complete = train[~np.isnan(train).any(axis=1)]
  dropped = gmm.fit(jax.random.key(0), complete, k).params
  imputed = gmm.fit(jax.random.key(0), np.where(np.isnan(train), np.nanmean(train, 0), train),
                    k).params
  s_ours, s_drop, s_imp = score(ours), score(dropped), score(imputed)
  print(f"held-out observed-data log-lik: marginalised {s_ours:.3f}, dropped rows {s_drop:.3f}, "
        f"mean-imputed {s_imp:.3f} ({len(complete)} complete rows of 600)")
  assert s_ours > s_drop + 0.05 and s_ours > s_imp + 0.05, (s_ours, s_drop, s_imp, len(complete))


# ---- The machinery: chunks, weights, restarts, mesh, streaming, fixed -------------------------


def test_chunks_weights_restarts_mesh_streaming_and_fixed(x64):
  x = _remove(_mixture_data(90), 0.25, 7)
  init = _params(4, 3, 4, "tied")
  fit = lambda xx, **kw: gmm.fit(jax.random.key(0), xx, 3, "tied", max_iter=6,  # noqa: E731
                                 tol=0.0, missing="marginalize", **kw)
  base = fit(x, init=init)
  leaves = lambda r: jax.tree.leaves(r.params) + [r.log_likelihood]  # noqa: E731

  def same(a, b, rtol=1e-9):
    for u, v in zip(leaves(a), leaves(b)):
      np.testing.assert_allclose(u, v, rtol=rtol, atol=1e-11)

  same(base, fit(x, init=init, chunk_size=16))  # chunking (with padding rows)
  counts = np.random.default_rng(0).integers(0, 3, len(x))
  same(fit(x, init=init, sample_weight=counts.astype(float)),
       fit(np.repeat(x, counts, axis=0), init=init))
  same(base, fit(x, init=init, chunk_size=30, mesh=sharding.data_mesh()))
  family = gmm.MissingGaussianFamily("tied", 1e-6)
  batches = lambda: ((x[i:i + 32], None) for i in range(0, len(x), 32))  # noqa: E731
  streamed = mixture.fit_streaming(family, init, batches, 4, max_iter=6, tol=0.0, batch_size=32)
  same(base, streamed)
  restarts = fit(x, init="random_from_data", n_init=3)
  singles = [gmm.fit(k, x, 3, "tied", init="random_from_data", max_iter=6, tol=0.0,
                     missing="marginalize").lower_bound
             for k in jax.random.split(jax.random.key(0), 3)]
  np.testing.assert_allclose(restarts.lower_bound, max(map(float, singles)), rtol=1e-9)
  frozen = fit(x, init=init, fixed=("means",))
  assert np.array_equal(frozen.params.means, init.means)
  assert np.all(np.diff(np.asarray(frozen.log_likelihood)) >= -1e-12)


def test_bad_input_is_a_value_error():
  x = _remove(_mixture_data(40, dtype=np.float32), 0.2, 1)
  p = _params(0, 3, 4, "diag", np.float32)
  mask = ~np.isnan(x)
  with pytest.raises(ValueError, match='missing="marginalize"'):
    gmm.fit(jax.random.key(0), x, 3)
  with pytest.raises(ValueError, match="Unknown missing 'drop'"):
    gmm.fit(jax.random.key(0), x, 3, missing="drop")
  bad = x.copy()
  bad[3] = np.nan
  with pytest.raises(ValueError, match="all NaN"):
    gmm.fit(jax.random.key(0), bad, 3, missing="marginalize")
  bad = x.copy()
  bad[:, 2] = np.nan
  with pytest.raises(ValueError, match=r"column\(s\) \[2\]"):
    gmm.fit(jax.random.key(0), bad, 3, missing="marginalize")
  bad = x.copy()
  bad[0, 0] = np.inf
  with pytest.raises(ValueError, match="infinite"):
    gmm.fit(jax.random.key(0), bad, 3, missing="marginalize")
  with pytest.raises(ValueError, match="shape of x"):
    gmm.log_marginal(p, x, mask[:, :3])
  with pytest.raises(ValueError, match="boolean"):
    gmm.log_marginal(p, x, mask.astype(np.float32))
  empty = mask.copy()
  empty[5] = False
  with pytest.raises(ValueError, match="no observed entry"):
    gmm.impute(p, x, empty)
  with pytest.raises(ValueError, match="key"):
    gmm.sample_missing(p, 0, x, mask)


def test_sklearn_drop_in_takes_missing():
  from lvmjax.sklearn import GaussianMixture  # pylint: disable=g-import-not-at-top
  x = _remove(_mixture_data(150), 0.2, 4)
  with pytest.raises(ValueError, match='missing="marginalize"'):
    GaussianMixture(3, covariance_type="diag", random_state=0).fit(x)
  gm = GaussianMixture(3, covariance_type="diag", random_state=0, missing="marginalize").fit(x)
  mask = ~np.isnan(x)
  with jax.enable_x64(True):
    expect = np.asarray(gmm.log_marginal(gm.params_, x, mask))
    labels = np.asarray(gmm.map_latent(gm.params_, x, mask))
  np.testing.assert_allclose(gm.score_samples(x), expect, rtol=1e-10)
  np.testing.assert_array_equal(gm.predict(x), labels)
  np.testing.assert_allclose(gm.predict_proba(x).sum(1), 1.0, rtol=1e-12)
  assert gm.lower_bound_ == pytest.approx(float(np.mean(expect)), abs=1e-3)


# ---- Two CPU devices in a fresh process (slow) ------------------------------------------------


def _mesh_main():
  """Run in a fresh Python with 2 CPU devices: the missing-data fit on the mesh equals the
  one-device fit, and fixed fields come back bit for bit."""
  assert jax.device_count() == 2, jax.devices()
  out = {}
  with jax.enable_x64(True):
    x = _remove(_mixture_data(101), 0.25, 7)  # odd: padding rows must not count
    for cov_type in ("full", "diag"):
      init = _params(4, 3, 4, cov_type)
      kw = dict(init=init, max_iter=6, tol=0.0, missing="marginalize", chunk_size=20,
                fixed=("weights",))
      a = gmm.fit(jax.random.key(0), x, 3, cov_type, **kw)
      b = gmm.fit(jax.random.key(0), x, 3, cov_type, mesh=sharding.data_mesh(), **kw)
      out[cov_type] = {
          "bitwise": bool(np.array_equal(np.asarray(b.params.weights), np.asarray(init.weights))),
          "diff": max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
                      for u, v in zip(jax.tree.leaves(a.params) + [a.log_likelihood],
                                      jax.tree.leaves(b.params) + [b.log_likelihood]))}
  print("RESULT " + json.dumps(out))


@pytest.mark.slow
def test_two_device_cpu_mesh_equals_one_device():
  out = processes.on_cpu_devices("test_gmm_missing", "_mesh_main", 2, timeout=600)
  for cov_type, r in out.items():
    assert r["bitwise"] and r["diff"] < 1e-9, (cov_type, r)
