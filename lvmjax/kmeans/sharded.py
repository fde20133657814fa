r"""K-means with the rows of x split over a device mesh: Lloyd's iterations as one ``psum`` each.

Every device runs the assignment step on its own rows; the cluster sums :math:`\sum w x` and
weights :math:`\sum w`, the inertia and the count of changed labels are added over the devices
with ``jax.lax.psum``, and the update step is computed, replicated, from the sums. The seeding
(k-means++ or random), the relocation of empty clusters and the convergence tests are those of
:func:`lvmjax.kmeans.fit` made collective, so the fit equals the one-device fit up to float
rounding (the order of the additions differs). ``kmeans.fit(..., mesh=mesh)`` or a row-sharded
``x`` lands here; ``fit_local`` is the per-device body, for use inside a ``shard_map`` of one's
own (the GMM's sharded EM initialises with it).

Memory per device: its block of rows, plus O(N) for the k-means++ seeding, which gathers the
(N,) vector of weighted distances to draw candidates exactly as the one-device seeding does.
"""
from __future__ import annotations

import functools
import math
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from lvmjax import _checks
from lvmjax import sharding
from lvmjax.kmeans import kmeans as _km


Shard = sharding.Shard  # moved to lvmjax.sharding; this name stays importable


def _psum(x, shard: Shard):
  return lax.psum(x, shard.axis_name)


def mean_and_variance(x: jax.Array, valid: jax.Array, shard: Shard) -> tuple[jax.Array, jax.Array]:
  """Unweighted mean and variance (per feature) of the real rows of all devices (two passes)."""
  n = shard.layout.num_points
  m = _psum(jnp.sum(jnp.where(valid[:, None], x, 0), axis=0), shard) / n
  v = _psum(jnp.sum(jnp.where(valid[:, None], (x - m) ** 2, 0), axis=0), shard) / n
  return m, v


def kmeans_plusplus_local(key: jax.Array, x: jax.Array, w: jax.Array, valid: jax.Array,
                          num_clusters: int, shard: Shard,
                          n_local_trials: int | None = None) -> tuple[jax.Array, jax.Array]:
  """:func:`lvmjax.kmeans.kmeans_plusplus` on rows split over devices (inside ``shard_map``).

  The candidates are drawn from the gathered (N,) cumulative sums, as on one device; the
  distances and potentials are computed per device and added.

  Returns:
    ``(centroids, indices)``: (K, D) replicated centroids and their global row ids.
  """
  if n_local_trials is None:
    n_local_trials = 2 + int(math.log(num_clusters))
  layout = shard.layout
  w = jnp.where(valid, w, 0)
  x_orig = x
  mean, _ = mean_and_variance(x, valid, shard)
  x = x - mean[None, :]
  x_sq = _km._sq_norms(x)  # pylint: disable=protected-access
  key_first, key_rest = jax.random.split(key)
  uniforms = jax.random.uniform(key_rest, (num_clusters, n_local_trials), x.dtype)

  def dist_to(points):  # (L, D) -> (L, n_local)
    d = _km._sq_norms(points)[:, None] - 2 * _km._cross(points, x) + x_sq[None, :]  # pylint: disable=protected-access
    return jnp.maximum(d, 0)

  def take(rows):
    return sharding.take_rows(x, shard.axis_name, layout, rows)

  w_cdf = jnp.cumsum(sharding.gather_rows(w, shard.axis_name, layout))
  first = _km._searchsorted_right_clipped(  # pylint: disable=protected-access
      w_cdf, jax.random.uniform(key_first, (), x.dtype) * w_cdf[-1])
  closest = dist_to(take(first[None]))[0]
  indices = jnp.zeros((num_clusters,), jnp.int32).at[0].set(first)

  def body(c, state):
    indices, closest = state
    cdf = jnp.cumsum(sharding.gather_rows(w * closest, shard.axis_name, layout))
    candidates = _km._searchsorted_right_clipped(cdf, uniforms[c] * cdf[-1])  # pylint: disable=protected-access
    dist = jnp.minimum(closest[None, :], dist_to(take(candidates)))
    potentials = _psum(jnp.matmul(dist, w, precision=_km._PRECISION), shard)  # pylint: disable=protected-access
    best = jnp.argmin(potentials)
    return indices.at[c].set(candidates[best]), dist[best]

  indices, _ = lax.fori_loop(1, num_clusters, body, (indices, closest))
  return sharding.take_rows(x_orig, shard.axis_name, layout, indices), indices


def random_init_local(key: jax.Array, x: jax.Array, w: jax.Array, valid: jax.Array,
                      num_clusters: int, shard: Shard) -> tuple[jax.Array, jax.Array]:
  """:func:`lvmjax.kmeans.random_init` on rows split over devices: the same draws."""
  layout = shard.layout
  wg = sharding.gather_rows(jnp.where(valid, w, 0), shard.axis_name, layout)
  gumbel = jax.random.gumbel(key, (layout.num_points,), x.dtype)
  scores = jnp.where(wg > 0, jnp.log(jnp.where(wg > 0, wg, 1)) + gumbel, -jnp.inf)
  _, indices = lax.top_k(scores, num_clusters)
  indices = indices.astype(jnp.int32)
  return sharding.take_rows(x, shard.axis_name, layout, indices), indices


def _relocate_empty(x, w, labels, valid, old_centroids, sums, weights, shard: Shard):
  """``kmeans._relocate_empty`` across devices: the farthest point is a global argmax (the
  lowest global row on ties), found with a ``pmax`` and a ``pmin`` over devices."""
  axis = shard.axis_name

  def relocate(stats):
    sums, weights = stats
    dist = jnp.sum((x - old_centroids[labels]) ** 2, axis=1)
    dist = jnp.where(valid, dist, -1)
    empty = weights == 0
    num_empty = jnp.where(lax.pmax(jnp.max(dist), axis) > 0, jnp.sum(empty), 0)
    empty_ids = jnp.nonzero(empty, size=empty.shape[0], fill_value=0)[0]
    me = lax.axis_index(axis)

    def body(j, carry):
      sums, weights, dist = carry
      local_max = jnp.max(dist)
      far = jnp.argmax(dist)
      global_max = lax.pmax(local_max, axis)
      owner = lax.pmin(jnp.where(local_max == global_max, me, jnp.iinfo(jnp.int32).max), axis)
      mine = me == owner
      point = lax.psum(jnp.where(mine, x[far] * w[far], 0), axis)
      wf = lax.psum(jnp.where(mine, w[far], 0), axis)
      old = lax.psum(jnp.where(mine, labels[far], 0), axis)
      new = empty_ids[j]
      sums = sums.at[old].add(-point).at[new].set(point)
      weights = weights.at[new].set(wf).at[old].add(-wf)
      return sums, weights, jnp.where(mine, dist.at[far].set(-jnp.inf), dist)

    sums, weights, _ = lax.fori_loop(0, num_empty, body, (sums, weights, dist))
    return sums, weights

  return lax.cond(jnp.any(weights == 0), relocate, lambda s: s, (sums, weights))


def fit_local(key, x, w, valid, init_centroids, tol, shard: Shard, *, num_clusters: int,
              init_kind: str, n_init: int, max_iter: int, chunk_size: int) -> _km.KMeansResult:
  """The per-device body of a sharded K-means fit (call inside ``shard_map``).

  Args:
    key: PRNG key (replicated).
    x: (n_local, D) this device's rows (its block of ``shard.layout.block_rows`` rows, possibly
      padded further locally).
    w: (n_local,) weights (0 on padding).
    valid: (n_local,) bool, True on real rows.
    init_centroids: (K, D) for ``init_kind == "array"``, else None.
    tol: relative tolerance (scalar).
    shard: the static sharding description.
    num_clusters, init_kind, n_init, max_iter: as :func:`lvmjax.kmeans.fit` (``init_kind`` is
      "k-means++", "random" or "array").
    chunk_size: rows per assignment block on each device.

  Returns:
    A ``KMeansResult`` with replicated centroids and statistics and the LOCAL (n_local,) labels.
  """
  w = jnp.where(valid, w, 0)
  mean, var = mean_and_variance(x, valid, shard)
  xc = jnp.where(valid[:, None], x - mean[None, :], 0)
  tol_abs = tol * jnp.mean(var)
  n_local = x.shape[0]
  chunk = min(chunk_size, n_local)
  num_chunks = _km._num_chunks(n_local, chunk)  # pylint: disable=protected-access
  n_pad = n_local if num_chunks == 1 else num_chunks * chunk
  x_pad = _km._pad_rows(xc, n_pad)  # pylint: disable=protected-access
  w_pad = _km._pad_rows(w, n_pad)  # pylint: disable=protected-access
  valid_pad = _km._pad_rows(valid, n_pad)  # pylint: disable=protected-access
  data = _km._Data(x_pad, _km._sq_norms(x_pad), w_pad, x_pad * w_pad[:, None], valid_pad)  # pylint: disable=protected-access
  run = functools.partial(_km._lloyd, data, tol_abs=tol_abs, num_clusters=num_clusters,  # pylint: disable=protected-access
                          total=functools.partial(_psum, shard=shard),
                          relocate=functools.partial(_relocate_empty, shard=shard),
                          max_iter=max_iter, num_chunks=num_chunks)

  def one(k):
    if init_kind == "array":
      c0 = init_centroids - mean[None, :]
    elif init_kind == "k-means++":
      c0, _ = kmeans_plusplus_local(k, x_pad, w_pad, valid_pad, num_clusters, shard)
    else:
      c0, _ = random_init_local(k, x_pad, w_pad, valid_pad, num_clusters, shard)
    return run(c0)

  if n_init == 1:
    result = one(key)
  else:
    results = jax.vmap(one)(jax.random.split(key, n_init))
    best = jnp.argmin(results.inertia)
    result = jax.tree.map(lambda a: a[best], results)
  return result._replace(centroids=result.centroids + mean[None, :], labels=result.labels[:n_local])


@functools.partial(jax.jit, static_argnames=("num_clusters", "init_kind", "n_init", "max_iter",
                                             "chunk_size", "mesh", "axis_name", "layout"))
def _fit_jit(key, x, w, init_centroids, tol, *, num_clusters, init_kind, n_init, max_iter,
             chunk_size, mesh, axis_name, layout):
  shard = Shard(axis_name, layout)
  spec = P(axis_name)

  def local(key, x, w, init_centroids, tol):
    _, valid = sharding.local_rows(axis_name, layout, x.shape[0])
    r = fit_local(key, x, w, valid, init_centroids, tol, shard, num_clusters=num_clusters,
                  init_kind=init_kind, n_init=n_init, max_iter=max_iter, chunk_size=chunk_size)
    return r

  out_specs = _km.KMeansResult(P(), spec, P(), P(), P(), P())
  r = jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec, P(), P()), out_specs=out_specs,
                    check_vma=False)(key, x, w, init_centroids, tol)
  return r._replace(labels=r.labels[:layout.num_points])


def fit(key, x, num_clusters: int, init="k-means++", n_init: int = 1, max_iter: int = 300,
        tol: float = 1e-4, sample_weight=None, *, chunk_size: int | None = None,
        mesh: Mesh | None = None, axis_name: str | None = None) -> _km.KMeansResult:
  """:func:`lvmjax.kmeans.fit` on a device mesh (it lands here when given ``mesh`` or a
  row-sharded ``x``); same arguments, checks and result.

  ``x`` either is already split over the mesh along the data axis (a ``jax.Array``, possibly
  global over several processes: all its rows count as data, so give padding rows weight 0) or
  is put there by this function, padded internally (the padding is then not data: it is left
  out of the centring and the tolerance, and ``labels`` has the original N rows).
  """
  mesh, axis_name = sharding.mesh_of(x, mesh, axis_name)
  is_global = sharding.is_global(x)
  if is_global:
    _checks.check_data(sharding.ShapeOnly(x.shape))
    sharding.check_local_values(x)
  else:
    _checks.check_data(x)
  n, dim = np.shape(x)
  if sharding.is_global(sample_weight):
    if np.shape(sample_weight) != (n,):
      raise ValueError(f"sample_weight must have shape ({n},), one weight per row of x; got "
                       f"{np.shape(sample_weight)}.")
  else:
    _checks.check_sample_weight(sample_weight, n)
  num_clusters, n_init, max_iter, tol, chunk_size, init_kind = _km._check_fit_args(  # pylint: disable=protected-access
      n, dim, num_clusters, init, n_init, max_iter, tol, chunk_size, stacklevel=4)
  init_centroids = init if init_kind == "array" else None
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
  xs, ws, layout = sharding.place_rows(x, sample_weight, dtype, mesh, axis_name)
  if init_centroids is not None:  # via the host: it may be committed to one device
    init_centroids = np.asarray(jax.device_get(init_centroids), dtype)
  return _fit_jit(key, xs, ws, init_centroids, jnp.asarray(tol, dtype),
                  num_clusters=num_clusters, init_kind=init_kind, n_init=n_init,
                  max_iter=max_iter, chunk_size=chunk_size, mesh=mesh, axis_name=axis_name,
                  layout=layout)
