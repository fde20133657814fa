"""``num_active``: a fit of k components (clusters) inside the program compiled for K, so that one
compilation serves every k of a model selection. From the same starting values it must equal the
K=k fit (float64), its extra components must stay out (weight exactly 0, no point assigned), and
every k must run the same compiled program."""
import json

import jax
import numpy as np
import pytest

from lvmjax import gmm
from lvmjax import kmeans
from lvmjax import sharding
from tests import compile_count
from tests import processes


def _data(n_per=120, dtype=np.float64, seed=0):
  """Four clusters in 3-D, well apart, off the origin."""
  rng = np.random.default_rng(seed)
  centres = np.array([[-6.0, 0.0, 1.0], [0.0, 5.0, 0.0], [6.0, 0.0, -2.0], [12.0, 8.0, 3.0]])
  return np.concatenate([c + rng.normal(size=(n_per, 3)) for c in centres]).astype(dtype)


def _padded(params, k, big_k, rng):
  """``params`` of k components padded to big_k with junk components (positive weights, far
  means, odd covariances): num_active must ignore all of it."""
  extra = big_k - k
  weights = np.concatenate([np.asarray(params.weights), rng.uniform(0.2, 1.0, extra)])
  means = np.concatenate([np.asarray(params.means), rng.normal(size=(extra, 3)) * 50])
  cov = np.asarray(params.covariances)
  if params.covariance_type != "tied":
    junk = {"full": np.eye(3) * 7.0, "diag": np.full(3, 7.0), "spherical": 7.0}
    cov = np.concatenate([cov, np.broadcast_to(junk[params.covariance_type],
                                               (extra,) + cov.shape[1:])])
  return gmm.GMMParams(weights / weights.sum(), means, cov, params.covariance_type)


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
def test_gmm_from_parameters_equals_the_k_component_fit(x64, cov_type):
  x = _data()
  key = jax.random.key(3)
  rng = np.random.default_rng(1)
  for k in (1, 2, 3):
    start = gmm.fit(key, x, k, cov_type, init="random_from_data", max_iter=0).params
    ref = gmm.fit(key, x, k, cov_type, init=start, max_iter=40, tol=0.0)
    res = gmm.fit(key, x, 5, cov_type, init=_padded(start, k, 5, rng), max_iter=40, tol=0.0,
                  num_active=k)
    assert int(res.n_iter) == int(ref.n_iter) == 40
    np.testing.assert_allclose(np.asarray(res.log_likelihood), np.asarray(ref.log_likelihood),
                               rtol=0, atol=1e-10)
    for field in ("weights", "means"):
      np.testing.assert_allclose(np.asarray(getattr(res.params, field))[:k],
                                 np.asarray(getattr(ref.params, field)), rtol=0, atol=1e-9)
    cov = np.asarray(res.params.covariances)
    np.testing.assert_allclose(cov if cov_type == "tied" else cov[:k],
                               np.asarray(ref.params.covariances), rtol=0, atol=1e-9)
    assert np.all(np.asarray(res.params.weights)[k:] == 0.0)
    # The inactive components take no responsibility.
    post = np.asarray(gmm.posterior(res.params, x))
    assert np.all(post[:, k:] == 0.0)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_gmm_named_inits_fit_k_components(x64, init):
  """From a named initialisation (draws of k of K components), the extra components stay out and
  the fit reaches the K=k fit's optimum on well-separated clusters."""
  x = _data()
  key = jax.random.key(0)
  res = gmm.fit(key, x, 6, "full", init=init, num_active=4, max_iter=200)
  ref = gmm.fit(key, x, 4, "full", init=init, max_iter=200)
  weights = np.asarray(res.params.weights)
  assert np.all(weights[4:] == 0.0) and abs(weights.sum() - 1.0) < 1e-12
  assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(res.params))
  assert np.all(np.asarray(gmm.map_latent(res.params, x)) < 4)
  if init != "random":  # uniform random responsibilities may end in another local optimum
    assert abs(float(res.log_likelihood[-1]) - float(ref.log_likelihood[-1])) < 1e-6


def test_gmm_one_program_for_every_k():
  x = _data(dtype=np.float32)
  key = jax.random.key(0)
  keys = [jax.random.fold_in(key, k) for k in range(5)]  # (fold_in compiles a program)
  gmm.fit(key, x, 5, "full", num_active=5)
  with compile_count.count_programs() as count:
    for k in (1, 2, 3, 4):
      res = gmm.fit(keys[k], x, 5, "full", num_active=k)
      assert np.all(np.asarray(res.params.weights)[k:] == 0.0)
  assert count[0] == 0, count[0]


def test_gmm_num_active_traced_under_vmap():
  """num_active may be traced: one vmapped call fits every k."""
  x = _data(dtype=np.float32)
  ks = np.array([1, 2, 3, 4], np.int32)
  fits = jax.jit(jax.vmap(lambda k: gmm.fit(jax.random.key(0), x, 4, "diag",
                                            num_active=k, max_iter=50)))(ks)
  weights = np.asarray(fits.params.weights)
  for i, k in enumerate(ks):
    assert np.all(weights[i, k:] == 0.0) and np.all(weights[i, :k] > 0.0)
    one = gmm.fit(jax.random.key(0), x, 4, "diag", num_active=int(k), max_iter=50)
    np.testing.assert_allclose(weights[i], np.asarray(one.params.weights), atol=1e-5)


def test_gmm_missing_values_with_num_active(x64):
  x = _data()
  x[::7, 1] = np.nan
  res = gmm.fit(jax.random.key(0), x, 5, "full", missing="marginalize", num_active=4)
  ref = gmm.fit(jax.random.key(0), x, 4, "full", missing="marginalize")
  assert np.all(np.asarray(res.params.weights)[4:] == 0.0)
  assert abs(float(res.log_likelihood[-1]) - float(ref.log_likelihood[-1])) < 1e-6


def test_kmeans_from_centroids_equals_the_k_cluster_fit(x64):
  x = _data()
  rng = np.random.default_rng(0)
  for k in (1, 2, 3, 4):
    c0 = x[rng.choice(len(x), k, replace=False)]
    if k >= 3:  # an active cluster that starts empty: relocated, as in the K=k fit
      c0[-1] = [500.0, 500.0, 500.0]
    ref = kmeans.fit(jax.random.key(0), x, k, init=c0)
    junk = np.full((6 - k, 3), 1e3)
    res = kmeans.fit(jax.random.key(0), x, 6, init=np.concatenate([c0, junk]), num_active=k)
    np.testing.assert_allclose(np.asarray(res.centroids)[:k], np.asarray(ref.centroids),
                               rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(res.labels), np.asarray(ref.labels))
    assert abs(float(res.inertia) - float(ref.inertia)) < 1e-6 * float(ref.inertia) + 1e-9
    assert int(res.n_iter) == int(ref.n_iter)
    np.testing.assert_array_equal(np.asarray(res.centroids)[k:], junk)  # placeholders kept


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_kmeans_seeded_k_clusters(x64, init):
  x = _data()
  for k in (1, 2, 4):
    res = kmeans.fit(jax.random.key(1), x, 6, init=init, n_init=3, num_active=k)
    ref = kmeans.fit(jax.random.key(1), x, k, init=init, n_init=3)
    assert int(np.max(np.asarray(res.labels))) == k - 1
    assert abs(float(res.inertia) - float(ref.inertia)) < 1e-6 * float(ref.inertia)


def test_kmeans_one_program_for_every_k():
  x = _data(dtype=np.float32)
  keys = [jax.random.key(k) for k in range(6)]
  kmeans.fit(keys[0], x, 6, num_active=6)
  with compile_count.count_programs() as count:
    for k in (1, 3, 5):
      kmeans.fit(keys[k], x, 6, num_active=k)
  assert count[0] == 0, count[0]


@pytest.mark.parametrize("bad", [0, 6, 2.5, True, np.array([1, 2])])
def test_bad_num_active_is_a_value_error(bad):
  x = _data(dtype=np.float32)
  with pytest.raises(ValueError, match="num_active"):
    gmm.fit(jax.random.key(0), x, 5, num_active=bad)
  with pytest.raises(ValueError, match="num_active"):
    kmeans.fit(jax.random.key(0), x, 5, num_active=bad)


def _mesh_main():
  """In a fresh Python with 2 CPU devices: num_active on a mesh equals the one-device fit."""
  assert jax.device_count() == 2, jax.devices()
  jax.config.update("jax_enable_x64", True)
  x = _data(n_per=101)  # 404 rows
  mesh = sharding.data_mesh()
  out = {}
  one = gmm.fit(jax.random.key(0), x, 5, "full", num_active=3, chunk_size=101)
  two = gmm.fit(jax.random.key(0), x, 5, "full", num_active=3, chunk_size=101, mesh=mesh)
  out["gmm"] = float(np.max(np.abs(np.asarray(one.params.means) - np.asarray(two.params.means))))
  out["gmm_weights"] = np.asarray(two.params.weights).tolist()
  one = kmeans.fit(jax.random.key(0), x, 5, num_active=3)
  two = kmeans.fit(jax.random.key(0), x, 5, num_active=3, mesh=mesh)
  out["kmeans"] = float(np.max(np.abs(np.asarray(one.centroids) - np.asarray(two.centroids))))
  out["kmeans_labels"] = int(np.max(np.asarray(two.labels)))
  print("RESULT " + json.dumps(out))


def test_num_active_on_a_two_device_cpu_mesh():
  out = processes.on_cpu_devices("test_num_active", "_mesh_main", 2, timeout=300)
  assert out["gmm"] < 1e-9, out
  assert out["gmm_weights"][3:] == [0.0, 0.0], out
  assert out["kmeans"] < 1e-9 and out["kmeans_labels"] == 2, out
