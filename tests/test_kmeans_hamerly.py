"""``kmeans.fit(..., algorithm="hamerly")``: Lloyd's iterates with fewer distances.

Hamerly's bounds decide which points keep their label; the margin for float rounding must make
every such decision the one the matrix-product assignment takes, so the fit must equal the
``"lloyd"`` fit (labels, centroids, ``n_iter``: exactly in float64, to rounding in float32) and
scikit-learn's Lloyd from the same centroids. The bounds must also really skip work: a settled
fit leaves few points to assign again.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

from lvmjax import kmeans
from lvmjax import sharding
from lvmjax.kmeans import kmeans as kmeans_impl
from tests import processes


def _blobs(n=3000, d=5, k=12, spread=1.0, seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, d)) * 4 + 30.0  # off the origin: fit centres the data
  z = rng.integers(k, size=n)
  return (centres[z] + spread * rng.normal(size=(n, d))).astype(dtype)


def _datasets(dtype):
  rng = np.random.default_rng(1)
  return {
      "blobs": _blobs(dtype=dtype),
      "overlapping": _blobs(spread=4.0, seed=2, dtype=dtype),  # many points near boundaries
      "uniform": rng.uniform(size=(2000, 3)).astype(dtype),  # no cluster structure
      # Integer grid points: exact ties between centroids and repeated points.
      "grid": np.repeat(np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2),
                        20, axis=0).astype(dtype),
  }


def _fit(x, k, algorithm, **kw):
  return kmeans.fit(jax.random.key(0), x, k, algorithm=algorithm, **kw)


def _assert_same_fit(a, b, history_rtol):
  np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
  np.testing.assert_array_equal(np.asarray(a.centroids), np.asarray(b.centroids))
  assert int(a.n_iter) == int(b.n_iter) and bool(a.converged) == bool(b.converged)
  np.testing.assert_allclose(float(a.inertia), float(b.inertia), rtol=1e-12)
  n = int(a.n_iter)
  np.testing.assert_allclose(np.asarray(b.inertia_history)[:n], np.asarray(a.inertia_history)[:n],
                             rtol=history_rtol)


@pytest.mark.parametrize("name", ["blobs", "overlapping", "uniform", "grid"])
def test_equals_lloyd_float64_and_scikit_learn(x64, name):
  x = _datasets(np.float64)[name]
  k = 12
  c0 = x[np.random.default_rng(3).choice(len(x), k, replace=False)]
  lloyd = _fit(x, k, "lloyd", init=c0)
  hamerly = _fit(x, k, "hamerly", init=c0)
  _assert_same_fit(lloyd, hamerly, history_rtol=1e-9)
  assert int(hamerly.n_iter) > 3  # the bounds had iterations to act on
  sk = KMeans(k, init=c0, n_init=1, algorithm="lloyd").fit(x)
  if name == "grid":  # exact ties: the two libraries' roundings of equal distances may differ
    return
  np.testing.assert_array_equal(np.asarray(hamerly.labels), sk.labels_)
  np.testing.assert_allclose(np.asarray(hamerly.centroids), sk.cluster_centers_, atol=1e-10)
  assert int(hamerly.n_iter) == sk.n_iter_


@pytest.mark.parametrize("name", ["blobs", "overlapping", "uniform", "grid"])
def test_matches_lloyd_float32(name):
  """In float32 a point within rounding of two centroids may go either way (as in Lloyd's own
  step with another ``chunk_size``: the rows a matrix-product kernel computes together round
  differently), so the fits must agree to rounding, not bit for bit; the margin test below
  checks that the bounds never keep a wrong label."""
  x = _datasets(np.float32)[name]
  for k, seed in ((12, 0), (40, 1)):  # 40 clusters: many close centroids
    c0 = x[np.random.default_rng(seed).choice(len(x), k, replace=False)]
    lloyd = _fit(x, k, "lloyd", init=c0, tol=0.0, max_iter=60)
    hamerly = _fit(x, k, "hamerly", init=c0, tol=0.0, max_iter=60)
    assert np.mean(np.asarray(lloyd.labels) != np.asarray(hamerly.labels)) < 1e-3
    np.testing.assert_allclose(np.asarray(hamerly.centroids), np.asarray(lloyd.centroids),
                               atol=1e-3 * float(np.std(x)))
    np.testing.assert_allclose(float(hamerly.inertia), float(lloyd.inertia), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(hamerly.inertia_history),
                               np.asarray(lloyd.inertia_history), rtol=1e-4)


def test_margin_keeps_only_labels_rounding_cannot_flip():
  """float32 points of large norm almost on the bisector of two centroids: the expanded
  distances round worse than the gaps. Every label the bounds keep must be the exact (float64)
  closest centroid; without the margin, thousands of these points would keep a wrong one."""
  rng = np.random.default_rng(0)
  n, d = 20000, 16
  base = rng.normal(size=d) * 300
  c = np.stack([base + np.eye(d)[0] * 0.5, base - np.eye(d)[0] * 0.5]
               + [base + rng.normal(size=d) * 50 for _ in range(10)]).astype(np.float32)
  x = (base + rng.normal(size=(n, d)) * 20).astype(np.float32)
  x[:, 0] = base[0] + rng.normal(size=n) * 1e-3
  c_new = (c + rng.normal(size=c.shape) * 1e-5).astype(np.float32)
  xj = jnp.asarray(x)
  data = kmeans_impl._Data(xj, jnp.sum(xj * xj, 1), jnp.ones(n), xj, jnp.ones(n, bool))
  labels, upper, lower = kmeans_impl._two_closest(xj, data.x_sq, jnp.asarray(c),
                                                  jnp.sum(jnp.asarray(c) ** 2, 1))
  bounds = kmeans_impl._move_bounds(kmeans_impl._Bounds(upper, lower), labels, jnp.asarray(c),
                                    jnp.asarray(c_new))
  kept = ~np.asarray(kmeans_impl._needs_distances(data, jnp.asarray(c_new), labels, bounds, None))
  x64, c64 = x.astype(np.float64), c_new.astype(np.float64)
  exact = np.argmin(((x64[:, None] - c64[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(np.asarray(labels)[kept], exact[kept])
  # The same check on points far from any bisector: there the bounds keep almost every label.
  far = np.concatenate([cc + rng.normal(size=(500, d)).astype(np.float32) for cc in c[2:]])
  xj = jnp.asarray(far)
  data = kmeans_impl._Data(xj, jnp.sum(xj * xj, 1), jnp.ones(len(far)), xj,
                           jnp.ones(len(far), bool))
  labels, upper, lower = kmeans_impl._two_closest(xj, data.x_sq, jnp.asarray(c),
                                                  jnp.sum(jnp.asarray(c) ** 2, 1))
  bounds = kmeans_impl._move_bounds(kmeans_impl._Bounds(upper, lower), labels, jnp.asarray(c),
                                    jnp.asarray(c_new))
  kept = ~np.asarray(kmeans_impl._needs_distances(data, jnp.asarray(c_new), labels, bounds, None))
  assert kept.mean() > 0.9, kept.mean()
  exact = np.argmin(((far.astype(np.float64)[:, None] - c64[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(np.asarray(labels)[kept], exact[kept])


def test_weights_restarts_and_empty_clusters(x64):
  x = _blobs(n=1500, k=10, seed=4)
  rng = np.random.default_rng(5)
  w = rng.uniform(0, 2, len(x)) * (rng.uniform(size=len(x)) > 0.1)  # some weights 0
  for kw in (dict(sample_weight=w), dict(n_init=3), dict(init="random", n_init=2)):
    _assert_same_fit(_fit(x, 10, "lloyd", **kw), _fit(x, 10, "hamerly", **kw), 1e-9)
  # Two identical initial centroids: one cluster is empty after the first assignment and is
  # relocated (a large centroid move, so the bounds must let go of many points).
  c0 = x[:10].copy()
  c0[1] = c0[0]
  a, b = _fit(x, 10, "lloyd", init=c0), _fit(x, 10, "hamerly", init=c0)
  _assert_same_fit(a, b, 1e-9)
  assert len(np.unique(np.asarray(b.labels))) == 10


def test_one_cluster_and_num_active(x64):
  x = _blobs(n=800, k=6, seed=6)
  _assert_same_fit(_fit(x, 1, "lloyd"), _fit(x, 1, "hamerly"), 1e-12)
  c0 = x[np.random.default_rng(7).choice(len(x), 12, replace=False)]
  for k in (1, 2, 5):
    a = _fit(x, 12, "hamerly", init=c0, num_active=k)
    b = _fit(x, k, "lloyd", init=c0[:k])
    np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
    # (A K <= 8 fit sums its clusters by masked sums, K = 12 by a segment sum: rounding.)
    np.testing.assert_allclose(np.asarray(a.centroids[:k]), np.asarray(b.centroids), rtol=1e-13)
    np.testing.assert_array_equal(np.asarray(a.centroids[k:]), c0[k:])  # placeholders kept
  # num_active traced under vmap: one program for every k.
  fits = jax.jit(jax.vmap(lambda k: kmeans.fit(jax.random.key(0), x, 12, init=c0, num_active=k,
                                               algorithm="hamerly")))(jnp.arange(1, 6))
  for i, k in enumerate(range(1, 6)):
    b = _fit(x, k, "lloyd", init=c0[:k])
    np.testing.assert_array_equal(np.asarray(fits.labels[i]), np.asarray(b.labels))


def test_auto_choice_and_bad_value():
  cpu = jax.default_backend() == "cpu"
  assert kmeans.resolve_algorithm("auto", 64, 500_000) == ("hamerly" if cpu else "lloyd")
  assert kmeans.resolve_algorithm("auto", 8, 500_000) == "lloyd"  # compared elementwise
  assert kmeans.resolve_algorithm("auto", 64, 1_000) == "lloyd"  # small: the smaller program
  assert kmeans.resolve_algorithm("hamerly", 3, 10) == "hamerly"
  with pytest.raises(ValueError, match="algorithm"):
    kmeans.fit(jax.random.key(0), np.zeros((10, 2), np.float32), 2, algorithm="elkan")


def test_bounds_skip_most_points_once_settled(x64):
  """The mechanism, not only the result: after a converged fit, the bounds (moved by a small
  step of the centroids) settle most points, and assigning only the others gives the labels and
  distances of the full assignment."""
  x = _blobs(n=4000, k=12, seed=8)
  xc = x - x.mean(0)
  c = np.asarray(_fit(xc, 12, "lloyd").centroids)
  data = kmeans_impl._Data(jnp.asarray(xc), jnp.sum(jnp.asarray(xc) ** 2, 1),
                           jnp.ones(len(x)), jnp.asarray(xc), jnp.ones(len(x), bool))
  c_sq = jnp.sum(jnp.asarray(c) ** 2, 1)
  labels, first, second = kmeans_impl._two_closest(data.x, data.x_sq, jnp.asarray(c), c_sq)
  bounds = kmeans_impl._Bounds(first, second)
  c_new = c + np.random.default_rng(9).normal(size=c.shape) * 0.05
  bounds = kmeans_impl._move_bounds(bounds, labels, jnp.asarray(c), jnp.asarray(c_new))
  need = kmeans_impl._needs_distances(data, jnp.asarray(c_new), labels, bounds, None)
  assert float(jnp.mean(need)) < 0.2, float(jnp.mean(need))
  c_new_sq = jnp.sum(jnp.asarray(c_new) ** 2, 1)
  got_labels, got = kmeans_impl._assign_pruned(data, jnp.asarray(c_new), c_new_sq, labels, bounds,
                                               need, block=256)
  want_labels, want_first, want_second = kmeans_impl._two_closest(data.x, data.x_sq,
                                                                  jnp.asarray(c_new), c_new_sq)
  np.testing.assert_array_equal(np.asarray(got_labels), np.asarray(want_labels))
  need = np.asarray(need)
  np.testing.assert_allclose(np.asarray(got.upper)[need], np.asarray(want_first)[need])
  np.testing.assert_allclose(np.asarray(got.lower)[need], np.asarray(want_second)[need])
  # Settled points kept their bounds, and the bounds hold: upper >= own distance, lower <= the
  # distance to every other centroid.
  true = np.sqrt(((xc[:, None, :] - c_new[None]) ** 2).sum(-1))
  own = true[np.arange(len(x)), np.asarray(got_labels)]
  other = np.where(np.arange(12)[None] == np.asarray(got_labels)[:, None], np.inf, true).min(1)
  assert np.all(np.asarray(got.upper) >= own - 1e-9)
  assert np.all(np.asarray(got.lower) <= other + 1e-9)


def _mesh_main():
  """In a fresh Python with 2 CPU devices: the Hamerly fit on a mesh equals the one-device
  Lloyd fit."""
  assert jax.device_count() == 2, jax.devices()
  jax.config.update("jax_enable_x64", True)
  x = _blobs(n=2001, k=12, seed=10)
  c0 = x[:12]
  one = kmeans.fit(jax.random.key(0), jax.device_put(x, jax.devices()[0]), 12, init=c0,
                   algorithm="lloyd")
  two = kmeans.fit(jax.random.key(0), x, 12, init=c0, algorithm="hamerly",
                   mesh=sharding.data_mesh())
  out = {"centroids": float(np.max(np.abs(np.asarray(one.centroids) - np.asarray(two.centroids)))),
         "labels": int(np.sum(np.asarray(one.labels) != np.asarray(two.labels))),
         "n_iter": [int(one.n_iter), int(two.n_iter)]}
  print("RESULT " + json.dumps(out))


def test_hamerly_on_a_two_device_cpu_mesh():
  out = processes.on_cpu_devices("test_kmeans_hamerly", "_mesh_main", 2, timeout=300)
  assert out["centroids"] < 1e-9 and out["labels"] == 0, out
  assert out["n_iter"][0] == out["n_iter"][1], out
