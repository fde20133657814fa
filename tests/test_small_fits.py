"""Thousands of small fits (issue #15): the elementwise paths for small K and D that
``jax.vmap(gmm.fit)`` over many small mixtures runs (K-means' assignment, sums and relocation for
K <= 8, D <= 4; the GMM E-step's whitening and moments for D <= 4) against independent
references: NumPy in float64 for the E-step statistics, and every vmapped member against the
same fit run alone (the relocation of empty clusters must act on the members that need it and
leave the others alone). The linear algebra itself is tested in tests/test_linalg.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvmjax import fixed_point
from lvmjax import gmm
from lvmjax import kmeans
from lvmjax import linalg


def _mixtures(num, n=60, d=2, k=3, seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num, k, d)) * 3
  z = rng.integers(0, k, (num, n))
  return (np.take_along_axis(centers, z[..., None], axis=1) + rng.normal(size=(num, n, d))).astype(
      dtype)


def _params(d, k=3, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(k, d, d))
  w = rng.uniform(0.5, 1.5, k)
  return gmm.GMMParams(jnp.asarray(w / w.sum()), jnp.asarray(rng.normal(size=(k, d)) * 2),
                       jnp.asarray(a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)), "full")


@pytest.mark.parametrize("d", [1, 2, 3, linalg.SMALL_D, linalg.SMALL_D + 1])
def test_full_e_step_statistics_equal_numpy(x64, d):
  # Small D takes the elementwise E-step, D = SMALL_D + 1 the matrix-product one: both must give
  # the responsibilities' sums and moments about the E-step's means, computed here directly.
  p = _params(d, seed=d)
  x = np.random.default_rng(d).normal(size=(70, d)) * 2
  w = np.random.default_rng(d + 1).uniform(0, 2, 70)
  stats = gmm.e_step(p, x, w)
  means, cov, weights = (np.asarray(a) for a in (p.means, p.covariances, p.weights))
  log_joint = np.stack([
      np.log(weights[k]) - 0.5 * (d * np.log(2 * np.pi) + np.linalg.slogdet(cov[k])[1]
                                  + np.einsum("nd,de,ne->n", x - means[k],
                                              np.linalg.inv(cov[k]), x - means[k]))
      for k in range(3)], axis=1)
  log_px = np.logaddexp.reduce(log_joint, axis=1)
  wr = w[:, None] * np.exp(log_joint - log_px[:, None])
  diff = x[None] - means[:, None]  # (K, n, D)
  np.testing.assert_allclose(stats.counts, wr.sum(0), rtol=1e-11)
  np.testing.assert_allclose(stats.sum_x, np.einsum("nk,knd->kd", wr, diff), rtol=1e-10,
                             atol=1e-11)
  np.testing.assert_allclose(stats.sum_xx, np.einsum("nk,knd,kne->kde", wr, diff, diff),
                             rtol=1e-10, atol=1e-11)
  np.testing.assert_allclose(stats.log_likelihood, np.sum(w * log_px), rtol=1e-12)


def test_vmapped_small_gmm_fits_equal_single_fits():
  # The benchmark's setting (float32, full, k-means init, scikit-learn's defaults), few members.
  xs = _mixtures(6, n=80, dtype=np.float32)
  keys = jax.random.split(jax.random.key(3), 6)
  fit = lambda key, x: gmm.fit(key, x, 3)  # pylint: disable=unnecessary-lambda-assignment
  batched = jax.jit(jax.vmap(fit))(keys, xs)
  for i in range(6):
    single = fit(keys[i], xs[i])
    assert int(batched.n_iter[i]) == int(single.n_iter) and bool(batched.converged[i])
    np.testing.assert_allclose(batched.lower_bound[i], single.lower_bound, rtol=1e-5)
    np.testing.assert_allclose(batched.params.means[i], single.params.means, rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(batched.params.covariances[i], single.params.covariances,
                               rtol=1e-4, atol=1e-4)


def test_many_vmapped_fits_refill_lanes_and_equal_single_fits(x64):
  # More members than the EM loop's lanes (fixed_point.default_slots: 256), so that members
  # from 256 on run in lanes freed by members that stopped; in float64 each must equal its fit
  # run alone, iteration counts included. The counts vary, so lanes are freed at different
  # times.
  num = 300
  assert num > fixed_point.default_slots(num)
  xs = _mixtures(num, n=40, seed=5)
  keys = jax.random.split(jax.random.key(4), num)
  fit = lambda key, x: gmm.fit(key, x, 3)  # pylint: disable=unnecessary-lambda-assignment
  batched = jax.jit(jax.vmap(fit))(keys, xs)
  assert len(set(np.asarray(batched.n_iter).tolist())) > 3
  single = jax.jit(fit)
  for i in list(range(0, num, 23)) + [num - 2, num - 1]:
    one = single(keys[i], xs[i])
    assert int(batched.n_iter[i]) == int(one.n_iter)
    np.testing.assert_allclose(batched.lower_bound[i], one.lower_bound, rtol=1e-10)
    np.testing.assert_allclose(batched.params.means[i], one.params.means, rtol=1e-8, atol=1e-10)


def test_vmapped_kmeans_relocates_only_where_a_cluster_is_empty(x64):
  # Member 1 starts with a centroid far from every point (an empty cluster on the first
  # iteration, relocated onto the farthest point); members 0 and 2 never have an empty cluster.
  xs = _mixtures(3, n=50, d=2, k=3, seed=1)
  c0 = xs[:, :3].copy()
  c0[1, 2] = [1e3, 1e3]
  keys = jax.random.split(jax.random.key(0), 3)
  fit = lambda key, x, c: kmeans.fit(key, x, 3, init=c)  # pylint: disable=unnecessary-lambda-assignment
  batched = jax.vmap(fit)(keys, xs, c0)
  for i in range(3):
    single = fit(keys[i], xs[i], c0[i])
    np.testing.assert_allclose(batched.centroids[i], single.centroids, rtol=1e-12)
    np.testing.assert_array_equal(batched.labels[i], single.labels)
    assert int(batched.n_iter[i]) == int(single.n_iter)
  # The relocation happened: no centroid of member 1 is left far away.
  assert np.all(np.abs(np.asarray(batched.centroids[1])) < 100)
