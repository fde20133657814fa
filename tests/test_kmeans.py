"""Tests for lvmjax.kmeans against scikit-learn's KMeans and brute force, in float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

from lvmjax import kmeans

# The seeding functions are un-jitted building blocks; jit them once here so that the tests do not
# recompile their loops on every call.
_kmeans_plusplus = jax.jit(kmeans.kmeans_plusplus, static_argnums=2)
_random_init = jax.jit(kmeans.random_init, static_argnums=2)


# Most tests share one shape and configuration (N=300, D=3, K=5, max_iter=300), so that fit is
# compiled a few times only.
N, D, K = 300, 3, 5


def _blobs(seed, n=N, d=D, k=4, spread=4.0, offset=0.0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(scale=spread, size=(k, d))
  return centers[rng.integers(0, k, n)] + rng.normal(size=(n, d)) + offset


def _weights(seed, low=0.2, high=3.0, n=N):
  return np.random.default_rng(seed).uniform(low, high, n)


def _sklearn(x, c0, sample_weight=None, **kw):
  km = KMeans(len(c0), init=c0, n_init=1, algorithm="lloyd", **kw)
  return km.fit(x, sample_weight=sample_weight)


def _assert_same_fit(result, km, rtol=1e-10):
  np.testing.assert_allclose(result.centroids, km.cluster_centers_, rtol=rtol, atol=rtol)
  np.testing.assert_array_equal(result.labels, km.labels_)
  np.testing.assert_allclose(result.inertia, km.inertia_, rtol=rtol)
  assert int(result.n_iter) == km.n_iter_


def _brute_sq_dist(x, c):
  x, c = np.asarray(x, np.float64), np.asarray(c, np.float64)
  return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)


# ------------------------------------------------------------------------------------------------
# Equality with scikit-learn from the same initial centroids.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,weighted,offset", [
    (0, False, 0.0), (1, True, 0.0), (2, False, 100.0), (3, True, -50.0)])
def test_matches_sklearn_from_same_init(x64, seed, weighted, offset):
  x = _blobs(seed, offset=offset)
  c0 = x[np.random.default_rng(seed + 100).choice(N, K, replace=False)]
  w = _weights(seed) if weighted else None
  result = kmeans.fit(jax.random.key(0), x, K, init=c0, sample_weight=w)
  _assert_same_fit(result, _sklearn(x, c0, w))
  assert bool(result.converged)
  assert result.centroids.dtype == jnp.float64


@pytest.mark.parametrize("max_iter,tol", [(1, 1e-4), (3, 0.0), (300, 1e-2), (300, 0.0)])
def test_matches_sklearn_n_iter_and_stopping(x64, max_iter, tol):
  # Overlapping blobs converge slowly: exercises max_iter, tol=0 (strict convergence only), a
  # large tol, and the final re-assignment when the loop stops without stable labels.
  x = _blobs(5, spread=1.5)
  c0 = x[:K]
  result = kmeans.fit(jax.random.key(0), x, K, init=c0, max_iter=max_iter, tol=tol)
  km = _sklearn(x, c0, max_iter=max_iter, tol=tol)
  _assert_same_fit(result, km)
  assert int(result.n_iter) > 2 or max_iter < 3
  if max_iter == 1:
    assert not bool(result.converged)


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_sklearn_with_empty_cluster_relocation(x64, weighted):
  # The last initial centroid is far from every point, so its cluster is empty on the first
  # iteration and scikit-learn moves it onto the point farthest from its centroid.
  x = _blobs(7)
  c0 = np.concatenate([x[:K - 1], [[1e3, 1e3, 1e3]]])
  w = _weights(7) if weighted else None
  _assert_same_fit(kmeans.fit(jax.random.key(0), x, K, init=c0, sample_weight=w),
                   _sklearn(x, c0, w))


def test_chunked_equals_unchunked(x64):
  x = _blobs(8)
  w = _weights(8, 0.0, 2.0)
  c0 = np.concatenate([x[:K - 1], [[1e3, 1e3, 1e3]]])  # a relocation, which must skip padding
  a = kmeans.fit(jax.random.key(0), x, K, init=c0, sample_weight=w)
  b = kmeans.fit(jax.random.key(0), x, K, init=c0, sample_weight=w, chunk_size=64)  # 5 blocks
  _assert_same_fit(b, _sklearn(x, c0, w))
  for name in ("centroids", "labels", "inertia", "n_iter", "inertia_history"):
    np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12)
  assert b.labels.shape == (N,)


def test_integer_weights_equal_repeated_rows(x64):
  x = _blobs(9)
  reps = np.random.default_rng(2).integers(0, 4, N)
  reps[0] = 2
  c0 = x[:K]
  # tol=0: the tolerance scales with the unweighted variance, which repetition changes.
  a = kmeans.fit(jax.random.key(0), x, K, init=c0, sample_weight=reps, tol=0.0)
  b = kmeans.fit(jax.random.key(0), np.repeat(x, reps, axis=0), K, init=c0, tol=0.0)
  np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-10)
  np.testing.assert_allclose(a.inertia, b.inertia, rtol=1e-10)
  np.testing.assert_array_equal(np.repeat(np.asarray(a.labels), reps), b.labels)
  assert int(a.n_iter) == int(b.n_iter) > 1


@pytest.mark.slow
def test_matches_sklearn_large_with_automatic_blocks(x64):
  # N > the automatic block size (2^18 / K rows on CPU), so the blocked path with padding runs.
  n, k = 40_000, 16
  x = _blobs(30, n=n, d=8, k=12, spread=2.0)
  w = _weights(30, n=n)
  c0 = x[np.random.default_rng(31).choice(n, k, replace=False)]
  result = kmeans.fit(jax.random.key(0), x, k, init=c0, sample_weight=w)
  _assert_same_fit(result, _sklearn(x, c0, w), rtol=1e-9)


def test_float32_default_and_centring():
  # Far from the origin, the matrix-product distances only work because fit centres the data.
  x = _blobs(10, offset=1e4)
  c0 = x[:K]
  result = kmeans.fit(jax.random.key(0), x.astype(np.float32), K, init=c0.astype(np.float32))
  km = _sklearn(x, c0)
  assert result.centroids.dtype == jnp.float32
  np.testing.assert_array_equal(result.labels, km.labels_)
  np.testing.assert_allclose(result.centroids, km.cluster_centers_, rtol=1e-6)
  np.testing.assert_allclose(result.inertia, km.inertia_, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# Invariants and restarts.
# ------------------------------------------------------------------------------------------------


def test_inertia_never_rises(x64):
  x = _blobs(11, k=8, spread=2.0)
  w = _weights(11, 0.0, 2.0)
  for key in range(3):
    result = kmeans.fit(jax.random.key(key), x, K, init="random", sample_weight=w, tol=0.0)
    n = int(result.n_iter)
    history = np.asarray(result.inertia_history)
    assert n > 3 and np.all(np.isfinite(history[:n])) and np.all(np.isnan(history[n:]))
    assert np.all(np.diff(history[:n]) <= 1e-9 * history[0])
    assert float(result.inertia) <= history[n - 1] * (1 + 1e-12)
    # The inertia is the weighted objective of the returned centroids and labels.
    d = _brute_sq_dist(x, result.centroids)
    np.testing.assert_allclose(result.inertia, (w * d.min(1)).sum(), rtol=1e-10)
    np.testing.assert_array_equal(result.labels, d.argmin(1))


def test_restarts_return_the_best(x64):
  x = _blobs(12, k=6, spread=2.0)
  key = jax.random.key(3)
  best = kmeans.fit(key, x, K, n_init=5)
  # The restarts are seeded by k-means++ on the centred data with the split keys.
  mean = x.mean(0)
  inertias = []
  for k in jax.random.split(key, 5):
    c0, _ = _kmeans_plusplus(k, x - mean, K)
    inertias.append(float(kmeans.fit(key, x, K, init=np.asarray(c0) + mean).inertia))
  assert len(set(np.round(inertias, 6))) > 1  # the restarts differ, so the choice matters
  np.testing.assert_allclose(best.inertia, min(inertias), rtol=1e-9)
  d = _brute_sq_dist(x, best.centroids)
  np.testing.assert_allclose(best.inertia, d.min(1).sum(), rtol=1e-10)


def test_eager_equals_jit(x64):
  # Eagerly every primitive compiles on its first use, so this stays to two fits. The array init
  # makes a relocation; "random" runs the seeding and the weighted draw eagerly too.
  x = _blobs(13)
  w = _weights(13)
  for init in (np.concatenate([x[:K - 1], [[50.0, 50.0, 50.0]]]), "random"):
    jitted = kmeans.fit(jax.random.key(1), x, K, init=init, sample_weight=w)
    with jax.disable_jit():
      eager = kmeans.fit(jax.random.key(1), x, K, init=init, sample_weight=w)
    assert int(eager.n_iter) > 1
    for a, b in zip(jitted, eager):
      np.testing.assert_allclose(a, b, rtol=1e-12)


def test_vmap_over_datasets(x64):
  xs = np.stack([_blobs(s) for s in range(3)])
  keys = jax.random.split(jax.random.key(0), 3)
  batched = jax.vmap(lambda k, x: kmeans.fit(k, x, K))(keys, xs)
  for i in range(3):
    single = kmeans.fit(keys[i], xs[i], K)
    np.testing.assert_allclose(batched.centroids[i], single.centroids, rtol=1e-10)
    np.testing.assert_array_equal(batched.labels[i], single.labels)
    assert int(batched.n_iter[i]) == int(single.n_iter)


def test_strict_promotion(strict_promotion):
  x = _blobs(14).astype(np.float32)
  w = np.ones(N, np.float32)
  result = kmeans.fit(jax.random.key(0), x, K, n_init=2, sample_weight=w, chunk_size=64)
  assert np.all(np.isfinite(result.centroids))
  jax.jit(kmeans.update_centroids, static_argnums=2)(x, result.labels, K, w, result.centroids)
  jax.jit(kmeans.inertia)(x, result.centroids, w)


def test_max_iter_zero_returns_init(x64):
  x = _blobs(15)
  c0 = x[:K]
  result = kmeans.fit(jax.random.key(0), x, K, init=c0, max_iter=0)
  np.testing.assert_allclose(result.centroids, c0, rtol=1e-12)
  d = _brute_sq_dist(x, c0)
  np.testing.assert_array_equal(result.labels, d.argmin(1))
  np.testing.assert_allclose(result.inertia, d.min(1).sum(), rtol=1e-10)
  assert int(result.n_iter) == 0 and not bool(result.converged)
  assert result.inertia_history.shape == (0,)


# ------------------------------------------------------------------------------------------------
# Initialisation.
# ------------------------------------------------------------------------------------------------


def test_kmeans_plusplus_picks_data_points_deterministically(x64):
  x = _blobs(16)
  c1, i1 = _kmeans_plusplus(jax.random.key(5), x, K)
  c2, i2 = _kmeans_plusplus(jax.random.key(5), x, K)
  _, i3 = _kmeans_plusplus(jax.random.key(6), x, K)
  np.testing.assert_array_equal(i1, i2)
  np.testing.assert_array_equal(c1, c2)
  np.testing.assert_array_equal(c1, x[np.asarray(i1)])
  assert len(set(np.asarray(i1).tolist())) == K
  # The un-jitted building block gives the same.
  np.testing.assert_array_equal(kmeans.kmeans_plusplus(jax.random.key(5), x, K)[1], i1)
  assert not np.array_equal(i1, i3)


def test_kmeans_plusplus_spreads_over_separated_blobs(x64):
  # D^2 seeding with tight, far-apart blobs puts one seed in each blob (a uniform draw of 5 seeds
  # would do so with probability 5!/5^5 < 4%).
  rng = np.random.default_rng(17)
  centers = np.arange(5)[:, None] * 1000.0 * np.ones((1, 2))
  blob = np.repeat(np.arange(5), [100, 3, 50, 20, 1])
  x = centers[blob] + rng.normal(scale=0.01, size=(len(blob), 2))
  for key in range(10):
    _, idx = _kmeans_plusplus(jax.random.key(key), x, 5)
    assert sorted(blob[np.asarray(idx)].tolist()) == [0, 1, 2, 3, 4]


def test_weighted_seeding_skips_zero_weight_points(x64):
  x = _blobs(18)
  w = np.zeros(N)
  w[::50] = 1.0  # 6 points of positive weight
  for key in range(5):
    _, idx = _kmeans_plusplus(jax.random.key(key), x, K, w)
    assert np.all(w[np.asarray(idx)] > 0)
    _, idx = _random_init(jax.random.key(key), x, 5, w)
    assert np.all(w[np.asarray(idx)] > 0) and len(set(np.asarray(idx).tolist())) == 5


def test_random_init_draws_distinct_rows(x64):
  x = _blobs(19, n=30)
  c, idx = _random_init(jax.random.key(0), x, 30)
  assert sorted(np.asarray(idx).tolist()) == list(range(30))
  np.testing.assert_array_equal(c, x[np.asarray(idx)])


# ------------------------------------------------------------------------------------------------
# Building blocks against brute force.
# ------------------------------------------------------------------------------------------------


def test_building_blocks_against_brute_force(x64):
  rng = np.random.default_rng(20)
  x = rng.normal(size=(97, 4))
  c = rng.normal(size=(5, 4))
  w = rng.uniform(0.0, 2.0, 97)
  d = _brute_sq_dist(x, c)
  np.testing.assert_allclose(kmeans.squared_distances(x, c), d, rtol=1e-10, atol=1e-12)
  for chunk in (None, 10):
    labels, min_d = kmeans.assign(x, c, chunk_size=chunk)
    np.testing.assert_array_equal(labels, d.argmin(1))
    np.testing.assert_allclose(min_d, d.min(1), rtol=1e-10)
    np.testing.assert_allclose(kmeans.inertia(x, c, w, chunk_size=chunk), (w * d.min(1)).sum(),
                               rtol=1e-12)
    np.testing.assert_array_equal(kmeans.predict(c, x, chunk_size=chunk), d.argmin(1))
  labels = d.argmin(1)
  new = kmeans.update_centroids(x, labels, 5, w)
  for k in range(5):
    m = labels == k
    np.testing.assert_allclose(new[k], (w[m, None] * x[m]).sum(0) / w[m].sum(), rtol=1e-12)


@pytest.mark.parametrize("num_clusters", [5, 40])  # both assignment paths (few / many clusters)
def test_assign_breaks_ties_by_first_index(x64, num_clusters):
  rng = np.random.default_rng(21)
  c = rng.normal(size=(num_clusters, 3))
  c[num_clusters - 1] = c[1]  # duplicated centroids: every point nearer to them is a tie
  c[num_clusters - 2] = c[0]
  x = np.concatenate([c[:2] + 1e-3, rng.normal(size=(200, 3))])
  d = _brute_sq_dist(x, c)
  for chunk in (None, 16):
    labels, min_d = kmeans.assign(x, c, chunk_size=chunk)
    np.testing.assert_array_equal(labels, d.argmin(1))  # numpy's argmin takes the first index
    np.testing.assert_allclose(min_d, d.min(1), rtol=1e-10, atol=1e-12)  # expansion: absolute
  assert {0, 1} <= set(np.asarray(labels[:2]).tolist())


def test_predict_uncentred_float32():
  rng = np.random.default_rng(21)
  c = rng.normal(size=(6, 3)) * 3 + 5e3
  x = c[rng.integers(0, 6, 200)] + rng.normal(scale=0.3, size=(200, 3))
  d = _brute_sq_dist(x, c)
  labels = kmeans.predict(c.astype(np.float32), x.astype(np.float32))
  np.testing.assert_array_equal(labels, d.argmin(1))


def test_update_centroids_relocates_empty_clusters(x64):
  x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [30.0]])
  old = np.array([[1.0], [10.0], [100.0], [200.0]])
  labels = np.array([0, 0, 0, 1, 1, 1])
  # Clusters 2 and 3 are empty. In index order they take the points farthest from their old
  # centroids: 30 (distance 20^2 to 10), then 0 or 2 (distance 1 to 1): the first, 0.
  new = kmeans.update_centroids(x, labels, 4, None, old)
  np.testing.assert_allclose(new[:, 0], [1.5, 10.5, 30.0, 0.0])
  # Without old centroids, empty clusters sit at the heaviest cluster's mean.
  new = kmeans.update_centroids(x, labels, 4)
  np.testing.assert_allclose(new[:, 0], [1.0, 17.0, 1.0, 1.0])


@pytest.mark.parametrize("init", ["k-means++", "array"])
def test_duplicated_points_give_no_nan(x64, init):
  # 3 distinct points (one of weight 0 only), 5 clusters: empty clusters cannot be relocated.
  x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 0.0]]), [5, 3, 4], axis=0)
  w = np.arange(12.0) % 3  # points of weight 0 too
  if init == "array":
    c0, dtype = x[[0, 1, 2, 5, 8]], np.float64
  else:
    c0, dtype = init, np.float32
  result = kmeans.fit(jax.random.key(0), x.astype(dtype), 5, init=c0, sample_weight=w,
                      n_init=2 if init != "array" else 1)
  assert np.all(np.isfinite(result.centroids)) and np.isfinite(result.inertia_history[0])
  assert float(result.inertia) == pytest.approx(0.0, abs=1e-5)
  if init == "array":
    same = kmeans.fit(jax.random.key(0), np.zeros((4, 3)), 3)
    assert np.all(np.asarray(same.centroids) == 0) and float(same.inertia) == 0.0


def test_array_init_warns_on_n_init(x64):
  x = _blobs(22)
  with pytest.warns(UserWarning, match="n_init"):
    result = kmeans.fit(jax.random.key(0), x, K, init=x[:K], n_init=3)
  _assert_same_fit(result, _sklearn(x, x[:K]))


# ------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------

_X = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=np.where(np.eye(10, 2) > 0, np.nan, _X)), "NaN"),
    (dict(x=np.where(np.eye(10, 2) > 0, np.inf, _X)), "NaN or infinite"),
    (dict(x=_X[:, 0]), "2-D"),
    (dict(x=_X[None]), "2-D"),
    (dict(x=np.zeros((0, 2), np.float32)), "at least one row"),
    (dict(num_clusters=11), "larger than the number of points"),
    (dict(num_clusters=0), "num_clusters"),
    (dict(num_clusters=2.0), "num_clusters"),
    (dict(n_init=0), "n_init"),
    (dict(max_iter=-1), "max_iter"),
    (dict(tol=-1e-3), "tol"),
    (dict(tol=float("nan")), "tol"),
    (dict(init="kmeans++"), "init"),
    (dict(init=np.zeros((2, 2))), "shape"),
    (dict(init=np.zeros((3, 3))), "shape"),
    (dict(init=np.full((3, 2), np.nan)), "finite"),
    (dict(sample_weight=np.ones(9)), "sample_weight"),
    (dict(sample_weight=-np.ones(10)), "sample_weight"),
    (dict(sample_weight=np.zeros(10)), "sample_weight"),
    (dict(sample_weight=np.full(10, np.inf)), "sample_weight"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_input_raises(kwargs, match):
  args = dict(x=_X, num_clusters=3)
  args.update(kwargs)
  x, k = args.pop("x"), args.pop("num_clusters")
  with pytest.raises(ValueError, match=match):
    kmeans.fit(jax.random.key(0), x, k, **args)


def test_bad_input_building_blocks():
  with pytest.raises(ValueError, match="shape"):
    kmeans.predict(np.zeros((3, 3)), _X)
  with pytest.raises(ValueError, match="NaN"):
    kmeans.predict(np.zeros((3, 2)), np.full((4, 2), np.nan))
  with pytest.raises(ValueError, match="larger than"):
    kmeans.kmeans_plusplus(jax.random.key(0), _X, 11)


# ------------------------------------------------------------------------------------------------
# One code path for one device and a mesh: the reduction hook with shard=None.


def test_seeding_skips_rows_marked_invalid(x64):
  x = _blobs(40)
  w = _weights(41)
  pad = np.full((7, D), 1e3)  # far away: k-means++ would pick them at once if they counted
  xp, wp = np.concatenate([x, pad]), np.concatenate([w, np.ones(7)])
  valid = np.arange(len(xp)) < N
  c, idx = kmeans.kmeans_plusplus(jax.random.key(3), x, K, w)
  cp, idxp = kmeans.kmeans_plusplus(jax.random.key(3), xp, K, wp, valid=valid)
  np.testing.assert_array_equal(idxp, idx)
  np.testing.assert_allclose(cp, c, rtol=1e-12)
  _, idr = kmeans.random_init(jax.random.key(4), xp, K, wp, valid=valid)
  assert np.all(np.asarray(idr) < N)


def test_fit_local_without_shard_is_fit(x64):
  x, w = _blobs(50), _weights(51)
  run = jax.jit(lambda key: kmeans.fit_local(key, x, w, None, None, 1e-4, None, num_clusters=K,
                                             init_kind="k-means++", n_init=1, max_iter=300))
  a, b = run(jax.random.key(6)), kmeans.fit(jax.random.key(6), x, K, sample_weight=w)
  for name in ("centroids", "labels", "inertia", "n_iter", "converged"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
  assert kmeans.default_chunk_size(K) >= 256
