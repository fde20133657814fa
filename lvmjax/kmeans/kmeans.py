r"""K-means clustering: the hard-assignment limit of the Gaussian mixture model.

K-means minimises the (weighted) inertia

.. math::

  J(c, z) = \sum_{i=1}^N w_i \, \lVert x_i - c_{z_i} \rVert^2

by Lloyd's alternation of an assignment step :math:`z_i = \arg\min_k \lVert x_i - c_k\rVert^2` and
an update step :math:`c_k = \sum_{i: z_i = k} w_i x_i / \sum_{i: z_i = k} w_i`. It is the limit of
EM for a GMM with shared spherical covariance :math:`\sigma^2 I` as :math:`\sigma \to 0`, where the
responsibilities become one-hot.

`fit` follows scikit-learn's ``KMeans(algorithm="lloyd")`` step by step (centring of the data,
the meaning of ``tol``, the convergence tests, ``n_iter``, the relocation of empty clusters, the
final re-assignment), so that from the same initial centroids both give the same fit. The building
blocks (`squared_distances`, `assign`, `update_centroids`, `inertia`, `kmeans_plusplus`,
`random_init`) are pure and un-jitted, so they compose under a user's ``jit``/``vmap``/sharding;
`fit` is jitted once per shape and configuration.

One code path serves one device and a mesh: the seeding, the relocation of empty clusters and
Lloyd's iterations take ``shard`` (the reduction hook of :mod:`lvmjax.sharding`): None on one
device, a :class:`lvmjax.sharding.Shard` inside ``shard_map``, where every total over rows becomes
a ``psum`` over the devices. Lloyd's loop is the library's one iteration skeleton,
:func:`lvmjax.fixed_point.fixed_point`, with a step that reports its own convergence.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike
import numpy as np

from lvmjax import _checks
from lvmjax import fixed_point
from lvmjax import linalg
from lvmjax import sharding
from lvmjax.sharding import Shard
from lvmjax.types import Array, Centroids, DataLike, Float, Key, Labels, Scalar, WeightsLike

INIT_METHODS = ("k-means++", "random")
ALGORITHMS = ("auto", "lloyd", "hamerly")

# Distances are differences of large numbers, so the matrix products must not drop to bfloat16 /
# TF32 on accelerators.
_PRECISION = lax.Precision.HIGHEST

# Up to this many clusters the closest centroid is found by K - 1 elementwise compares.
_SMALL_K = 8


class KMeansResult(NamedTuple):
  """Output of `fit`.

  Attributes:
    centroids: (K, D) cluster centres.
    labels: (N,) int32 index of the closest centroid of each point (computed against the final
      ``centroids``).
    inertia: scalar, :math:`\\sum_i w_i \\lVert x_i - c_{z_i}\\rVert^2` for the final centroids and
      labels.
    n_iter: int32 scalar, number of Lloyd iterations run (scikit-learn's ``n_iter_``).
    converged: bool scalar, True if the run stopped on the labels not changing or the centroid
      shift falling to ``tol`` (scikit-learn reports this only as a ConvergenceWarning).
    inertia_history: (max_iter,) inertia at each iteration, padded with NaN after ``n_iter``.
      Entry ``t`` is :math:`J(c^{(t)}, z^{(t+1)})`: the labels of iteration ``t + 1`` scored
      against the centroids they were assigned to (the value scikit-learn prints with
      ``verbose``). It never rises, and ``inertia <= inertia_history[n_iter - 1]``.
  """
  centroids: jax.Array
  labels: jax.Array
  inertia: jax.Array
  n_iter: jax.Array
  converged: jax.Array
  inertia_history: jax.Array


# ------------------------------------------------------------------------------------------------
# Building blocks (pure, un-jitted).
# ------------------------------------------------------------------------------------------------


def _float_dtype(x: ArrayLike) -> Any:
  dtype = jnp.asarray(x).dtype
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _as_float(x: ArrayLike, dtype: Any = None) -> jax.Array:
  return jnp.asarray(x, dtype=_float_dtype(x) if dtype is None else dtype)


def _weights(sample_weight: ArrayLike | None, num_points: int, dtype: Any) -> jax.Array:
  if sample_weight is None:
    return jnp.ones((num_points,), dtype)
  return jnp.asarray(sample_weight, dtype)


def _sq_norms(a: jax.Array) -> jax.Array:
  return linalg.sum_small(a * a, max_terms=linalg.SMALL_D)


def _cross(x: jax.Array, centroids: jax.Array) -> jax.Array:
  return linalg.matmul(x, centroids.T, precision=_PRECISION)


def squared_distances(x: DataLike, centroids: ArrayLike) -> Float[Array, "n k"]:
  r"""Squared Euclidean distances between points and centroids, by matrix products.

  .. math::

    d_{ik} = \max(0, \lVert x_i\rVert^2 - 2 x_i^\top c_k + \lVert c_k\rVert^2)

  One (N, D) x (D, K) product instead of an (N, K, D) difference tensor. The expansion loses
  precision when the points are far from the origin relative to their spread; centre the data
  first (as `fit` does).

  Args:
    x: (N, D) points.
    centroids: (K, D) centroids.

  Returns:
    (N, K) squared distances, clamped at 0.

  Examples:
    >>> squared_distances(jnp.array([[0., 0.], [3., 4.]]), jnp.array([[0., 0.]]))[:, 0]
    Array([ 0., 25.], dtype=float32)
  """
  x = _as_float(x)
  c = jnp.asarray(centroids, x.dtype)
  d = _sq_norms(x)[:, None] - 2 * _cross(x, c) + _sq_norms(c)[None, :]
  return jnp.maximum(d, 0)


def _assign_block(x: jax.Array, x_sq: jax.Array, c: jax.Array,
                  c_sq: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Labels and min squared distances of one block of rows (first index on ties)."""
  k = c.shape[0]  # ||x||^2 does not change the argmin: it is added to the minimum only
  if k <= _SMALL_K:
    partial = c_sq[None, :] - 2 * _cross(x, c)  # (rows, K)
    # Few clusters: one pass of compares over the K columns (first index on ties), elementwise
    # over the rows, instead of reductions over a K-long axis (XLA:CPU's reductions over a tiny
    # axis dominated 2,000 vmapped K-means fits of K=3, D=2; see lvmjax.linalg.sum_small).
    labels, min_partial = jnp.zeros(partial.shape[:1], jnp.int32), partial[:, 0]
    for j in range(1, k):
      closer = partial[:, j] < min_partial
      labels = jnp.where(closer, j, labels)
      min_partial = jnp.where(closer, partial[:, j], min_partial)
    return labels, jnp.maximum(min_partial + x_sq, 0)
  _, labels, min_partial = _closest_columns(x, c, c_sq)
  return labels, jnp.maximum(min_partial + x_sq, 0)


def _closest_columns(x: jax.Array, c: jax.Array,
                     c_sq: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(partial, labels, min_partial)`` of one block of rows for many clusters: ``partial`` is
  the (K, rows) matrix ||c_k||^2 - 2 c_k.x_i, ``labels`` the first index of its minimum in
  each column, ``min_partial`` that minimum.

  The (K, rows) layout makes both reductions run over the leading axis, elementwise across
  contiguous rows of the block (the (rows, K) layout reduces over a short minor axis, which
  XLA:CPU vectorises poorly: 85-106 ms against 72-79 ms per assignment of N=500,000, D=32, K=64
  on 2 cores). The first index is found by two plain reductions instead of jnp.argmin's one over
  (value, index) pairs, which XLA:CPU vectorises poorly (2x slower here). XLA may recompute
  `partial` inside the second reduction; that is bit-identical (2 * dot is exact, so a fused
  multiply-add rounds the same), hence some entry always equals the minimum.
  """
  k = c.shape[0]
  partial = c_sq[:, None] - 2 * _cross(c, x)  # (K, rows)
  min_partial = jnp.min(partial, axis=0)
  index = jnp.arange(k, dtype=jnp.int32)[:, None]
  labels = jnp.min(jnp.where(partial == min_partial[None, :], index, k), axis=0)
  return partial, labels, min_partial


_pad_rows = sharding.pad_rows


def default_chunk_size(num_clusters: int) -> int:
  """Rows per block of the (rows, K) distance matrix when ``chunk_size`` is None.

  On CPU, blocks of about 2^18 distances (4096 rows for K=64) stay in cache; this was 3-4x faster
  per Lloyd iteration than one (N, K) matrix at N=500,000, K=64. Accelerators run blocks in
  sequence, so there blocks are large: 2^27 distances (512 MB in float32).

  Args:
    num_clusters: K.

  Returns:
    ``max(256, elements // K)`` rows, ``elements`` 2^18 on CPU and 2^27 elsewhere.

  Examples:
    >>> default_chunk_size(64) >= 256
    True
  """
  elements = 2**18 if jax.default_backend() == "cpu" else 2**27
  return max(256, elements // max(num_clusters, 1))


def _num_chunks(num_points: int, chunk_size: int) -> int:
  if chunk_size >= num_points:
    return 1
  return -(-num_points // chunk_size)


def assign(x: DataLike, centroids: ArrayLike, *,
           chunk_size: int | None = None) -> tuple[Labels, Float[Array, "n"]]:
  r"""Assignment step: the closest centroid of every point.

  .. math::

    z_i = \arg\min_k \lVert x_i - c_k\rVert^2, \qquad
    m_i = \min_k \lVert x_i - c_k\rVert^2

  Ties go to the lowest index (as in scikit-learn).

  Args:
    x: (N, D) points.
    centroids: (K, D) centroids.
    chunk_size: rows per block: the blocks run in sequence with `lax.map`, so memory is
      O(chunk_size * K) instead of O(N * K). None picks a size (on CPU about 2^18 / K rows,
      which keeps a block in cache and is faster than one large block; elsewhere 2^27 / K).
      Blocks change the result only by rounding (a point within rounding of two centroids).

  Returns:
    ``(labels, min_sq_dist)``: (N,) int32 labels and (N,) squared distance to the chosen
    centroid (by the matrix-product expansion, clamped at 0).

  Examples:
    >>> labels, d = assign(jnp.array([[0.], [1.], [9.]]), jnp.array([[0.], [10.]]))
    >>> labels
    Array([0, 0, 1], dtype=int32)
  """
  x = _as_float(x)
  c = jnp.asarray(centroids, x.dtype)
  x_sq, c_sq = _sq_norms(x), _sq_norms(c)
  n = x.shape[0]
  if chunk_size is None:
    chunk_size = default_chunk_size(c.shape[0])
  num_chunks = _num_chunks(n, chunk_size)
  if num_chunks == 1:
    return _assign_block(x, x_sq, c, c_sq)
  n_pad = num_chunks * chunk_size
  xs = _pad_rows(x, n_pad).reshape(num_chunks, chunk_size, -1)
  sqs = _pad_rows(x_sq, n_pad).reshape(num_chunks, chunk_size)
  labels, min_d = lax.map(lambda args: _assign_block(args[0], args[1], c, c_sq), (xs, sqs))
  return labels.reshape(-1)[:n], min_d.reshape(-1)[:n]


def _cluster_sums(x: jax.Array, w: jax.Array, labels: jax.Array,
                  num_clusters: int) -> tuple[jax.Array, jax.Array]:
  """Weighted sums Σ_{z_i=k} w_i x_i (K, D) and weights Σ_{z_i=k} w_i (K,)."""
  # A segment sum (scatter-add) costs O(N D); the one-hot product (K, N) x (N, D) costs as much
  # as the distances and measured 3x slower per Lloyd iteration on CPU.
  return _segment_sums(x * w[:, None], w, labels, num_clusters)


def _segment_sums(xw: jax.Array, w: jax.Array, labels: jax.Array,
                  num_clusters: int) -> tuple[jax.Array, jax.Array]:
  """Σ_{z_i=k} xw_i (K, D) and Σ_{z_i=k} w_i (K,): a segment sum, or for few clusters in few
  dimensions masked sums over the rows (XLA:CPU runs a scatter element by element; under vmap of
  small fits the masked sums, elementwise over the (K, D, rows) grid, were several times
  faster)."""
  if num_clusters > _SMALL_K or xw.shape[-1] > linalg.SMALL_D:
    return (jax.ops.segment_sum(xw, labels, num_clusters),
            jax.ops.segment_sum(w, labels, num_clusters))
  mask = labels[None, :] == jnp.arange(num_clusters, dtype=labels.dtype)[:, None]  # (K, n)
  rows = jnp.concatenate([w[None, :], xw.T], axis=0)  # (1 + D, n): one reduction for both
  sums = jnp.sum(jnp.where(mask[:, None, :], rows[None, :, :], 0), axis=-1)  # (K, 1 + D)
  return sums[:, 1:], sums[:, 0]


def _take_rows(c: jax.Array, labels: jax.Array) -> jax.Array:
  """``c[labels]``: for few clusters by K - 1 elementwise selects instead of a gather."""
  k = c.shape[0]
  if k > _SMALL_K:
    return c[labels]
  out = jnp.broadcast_to(c[0], labels.shape + c.shape[1:])
  for j in range(1, k):
    out = jnp.where((labels == j)[:, None], c[j][None, :], out)
  return out


def _run_if(pred: jax.Array, fn: Any, carry: Any) -> Any:
  """``fn(carry)`` if ``pred`` else ``carry``. A while loop that runs at most once rather than a
  ``cond``: under ``vmap`` a ``cond`` runs both branches for every member, this runs ``fn`` only
  when some member's ``pred`` holds."""
  return lax.while_loop(lambda s: s[0], lambda s: (jnp.bool_(False), fn(s[1])),
                        (pred, carry))[1]


def _relocate_empty(x: jax.Array, w: jax.Array, labels: jax.Array, valid: jax.Array,
                    old_centroids: jax.Array, sums: jax.Array, weights: jax.Array,
                    shard: Shard | None = None,
                    active: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """scikit-learn's ``_relocate_empty_clusters_dense`` on the sufficient statistics.

  Each cluster of zero total weight, in index order, takes the not yet taken point farthest from
  its assigned old centroid (removed from its old cluster). Nothing moves when every point sits
  on its centroid (more clusters than distinct points). ``valid`` masks padding rows. On a mesh
  (``shard``) the farthest point is a global argmax, the lowest device on ties (a ``pmax`` and a
  ``pmin``), and its owner hands it to all devices with a ``psum``. Clusters outside ``active``
  (a (K,) mask) are not clusters: they are never relocated.
  """
  def is_empty(weights):
    return weights == 0 if active is None else (weights == 0) & active

  def relocate(stats):
    sums, weights = stats
    dist = _sq_norms(x - _take_rows(old_centroids, labels))
    dist = jnp.where(valid, dist, -1)
    empty = is_empty(weights)
    num_empty = jnp.where(sharding.pmax(jnp.max(dist), shard) > 0, jnp.sum(empty), 0)
    empty_ids = jnp.nonzero(empty, size=empty.shape[0], fill_value=0)[0]
    me = sharding.device_index(shard)

    def body(j, carry):
      sums, weights, dist = carry
      local_max = jnp.max(dist)
      far = jnp.argmax(dist)
      global_max = sharding.pmax(local_max, shard)
      owner = sharding.pmin(jnp.where(local_max == global_max, me, jnp.iinfo(jnp.int32).max),
                            shard)
      mine = me == owner
      point = sharding.psum(jnp.where(mine, x[far] * w[far], 0), shard)
      wf = sharding.psum(jnp.where(mine, w[far], 0), shard)
      old = sharding.psum(jnp.where(mine, labels[far], 0), shard)
      new = empty_ids[j]
      sums = sums.at[old].add(-point).at[new].set(point)
      weights = weights.at[new].set(wf).at[old].add(-wf)
      return sums, weights, jnp.where(mine, dist.at[far].set(-jnp.inf), dist)

    sums, weights, _ = lax.fori_loop(0, num_empty, body, (sums, weights, dist))
    return sums, weights

  # Only in the (rare) iterations where some member of a vmap has an empty cluster.
  return _run_if(jnp.any(is_empty(weights)), relocate, (sums, weights))


def _average(sums: jax.Array, weights: jax.Array) -> jax.Array:
  """Centroids = sums / weights; clusters still of weight 0 go to the heaviest cluster's mean."""
  nonempty = weights > 0
  means = sums * (1 / jnp.where(nonempty, weights, 1))[:, None]
  heaviest = means[jnp.argmax(weights)]
  return jnp.where(nonempty[:, None], means, heaviest[None, :])


def update_centroids(x: DataLike, labels: ArrayLike, num_clusters: int,
                     sample_weight: WeightsLike | None = None,
                     old_centroids: ArrayLike | None = None) -> Centroids:
  r"""Update step: weighted mean of the points assigned to each cluster.

  .. math::

    c_k = \frac{\sum_{i: z_i = k} w_i x_i}{\sum_{i: z_i = k} w_i}

  Empty clusters (total weight 0) are handled as scikit-learn's Lloyd iteration does, given
  ``old_centroids`` (the centroids ``labels`` were assigned to): in index order, each empty
  cluster is moved onto the point that is farthest from its old centroid (among points not taken
  yet), and that point is removed from its former cluster. Any cluster whose weight is still 0
  afterwards (no ``old_centroids``, every point on its centroid because there are fewer distinct
  points than clusters, or a relocated point of weight 0) is placed at the mean of the heaviest
  cluster. (scikit-learn means to do the same, but when the empty cluster's index is below the
  heaviest cluster's it copies that cluster's un-normalised sum; we use the mean.) The result is
  never NaN.

  Args:
    x: (N, D) points.
    labels: (N,) integer cluster of each point, in ``[0, num_clusters)``.
    num_clusters: K (static).
    sample_weight: (N,) non-negative weights, or None for 1.
    old_centroids: (K, D) centroids the labels were assigned to, for the relocation of empty
      clusters; None skips the relocation.

  Returns:
    (K, D) new centroids.

  Examples:
    >>> update_centroids(jnp.array([[0.], [2.], [10.]]), jnp.array([0, 0, 1]), 2)
    Array([[ 1.],
           [10.]], dtype=float32)
  """
  x = _as_float(x)
  labels = jnp.asarray(labels, jnp.int32)
  w = _weights(sample_weight, x.shape[0], x.dtype)
  sums, weights = _cluster_sums(x, w, labels, num_clusters)
  if old_centroids is not None:
    old = jnp.asarray(old_centroids, x.dtype)
    valid = jnp.ones(x.shape[:1], bool)
    sums, weights = _relocate_empty(x, w, labels, valid, old, sums, weights)
  return _average(sums, weights)


def inertia(x: DataLike, centroids: ArrayLike, sample_weight: WeightsLike | None = None, *,
            chunk_size: int | None = None) -> Scalar:
  r"""Weighted K-means objective of centroids on data.

  .. math::

    J = \sum_i w_i \min_k \lVert x_i - c_k\rVert^2

  The closest centroid is found by `assign`; the distance to it is then taken as a direct
  difference, which is exact also for uncentred data.

  Args:
    x: (N, D) points.
    centroids: (K, D) centroids.
    sample_weight: (N,) weights, or None for 1.
    chunk_size: see `assign`.

  Returns:
    Scalar inertia.

  Examples:
    >>> inertia(jnp.array([[0.], [2.]]), jnp.array([[1.]]))
    Array(2., dtype=float32)
  """
  x = _as_float(x)
  c = jnp.asarray(centroids, x.dtype)
  w = _weights(sample_weight, x.shape[0], x.dtype)
  labels, _ = assign(x, c, chunk_size=chunk_size)
  return _direct_inertia(x, w, c, labels)


def _direct_inertia(x: jax.Array, w: jax.Array, c: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.sum(w * _sq_norms(x - _take_rows(c, labels)))


def predict(centroids: ArrayLike, x: DataLike, *, chunk_size: int | None = None) -> Labels:
  r"""Closest centroid of each point, :math:`\arg\min_k \lVert x_i - c_k\rVert^2`.

  Args:
    centroids: (K, D) centroids, e.g. ``fit(...).centroids``.
    x: (N, D) points.
    chunk_size: see `assign`.

  Returns:
    (N,) int32 labels.

  Raises:
    ValueError: if the shapes do not match or x is not finite.

  Examples:
    >>> predict(jnp.array([[0.], [10.]]), jnp.array([[1.], [8.]]))
    Array([0, 1], dtype=int32)
  """
  _checks.check_data(x)
  _check_centroids(centroids, None, np.shape(x)[1], "centroids")
  _check_chunk_size(chunk_size)
  x = _as_float(x)
  return _predict(jnp.asarray(centroids, x.dtype), x, chunk_size)


@functools.partial(jax.jit, static_argnums=2)
def _predict(c: jax.Array, x: jax.Array, chunk_size: int | None) -> Labels:
  """:func:`predict` on checked arguments, as one compiled program (an eager call compiled one
  per operation); a caller's ``jit`` inlines it."""
  # Centre on the centroids' mean: the matrix-product distances keep their precision.
  shift = jnp.mean(c, axis=0)
  labels, _ = assign(x - shift[None, :], c - shift[None, :], chunk_size=chunk_size)
  return labels


def _searchsorted_right_clipped(cdf: jax.Array, values: jax.Array) -> jax.Array:
  idx = jnp.searchsorted(cdf, values, side="right")
  return jnp.minimum(idx, cdf.shape[0] - 1).astype(jnp.int32)


def kmeans_plusplus(key: Key, x: DataLike, num_clusters: int,
                    sample_weight: WeightsLike | None = None, *,
                    n_local_trials: int | None = None, valid: ArrayLike | None = None,
                    shard: Shard | None = None,
                    num_active: ArrayLike | None = None) -> tuple[Centroids, Labels]:
  r"""Greedy k-means++ seeding (scikit-learn's ``kmeans_plusplus``), on the device.

  The first centre is a point drawn with probability :math:`\propto w_i`. Each further centre:
  draw ``n_local_trials`` candidates with probability :math:`\propto w_i D(x_i)^2`, where
  :math:`D(x_i)^2` is the squared distance to the closest centre so far, and keep the candidate
  that lowers the weighted potential :math:`\sum_i w_i D(x_i)^2` the most. The loop over centres
  is a `lax.fori_loop`; one step costs an (N, D) x (D, L) product.

  Args:
    key: PRNG key.
    x: (N, D) points (centred inside for the precision of the distances).
    num_clusters: K (static), at most N.
    sample_weight: (N,) non-negative weights, or None for 1. Points of weight 0 are (almost
      surely) never chosen while points of positive weight remain at positive distance.
    n_local_trials: candidates per centre; None gives scikit-learn's ``2 + int(log(K))``.
    valid: optional (N,) bool mask of the real rows (padding rows are never chosen).
    shard: None on one device. Inside ``shard_map`` over the rows, a
      :class:`lvmjax.sharding.Shard`: ``x`` and the weights are this device's rows, the
      candidates are drawn from the gathered (N,) cumulative sums exactly as on one device, the
      distances and potentials are computed per device and added (``psum``).
    num_active: None, or k <= K (an int or a traced int32 scalar): seed only the first k
      centres (as for ``num_clusters=k``, with ``n_local_trials`` from K); rows k.. of the
      result are row 0 of x, placeholders (see `fit`'s ``num_active``).

  Returns:
    ``(centroids, indices)``: (K, D) chosen points and their (K,) int32 row indices in x, so
    ``x[indices] == centroids`` (as scikit-learn's ``kmeans_plusplus`` returns). With ``shard``
    the centroids are replicated and the indices are global row ids.

  Examples:
    >>> x = jnp.array([[0., 0.], [0., 1.], [10., 10.], [10., 11.]])
    >>> c, idx = kmeans_plusplus(jax.random.key(0), x, 2)
    >>> c.shape, bool(jnp.all(x[idx] == c))
    ((2, 2), True)
  """
  x = _as_float(x)
  n = x.shape[0]
  num_clusters = _checks.check_positive_int(num_clusters, "num_clusters")
  if shard is None and num_clusters > n:
    raise ValueError(f"num_clusters={num_clusters} is larger than the number of points {n}.")
  if n_local_trials is None:
    n_local_trials = 2 + int(math.log(num_clusters))
  n_local_trials = _checks.check_positive_int(n_local_trials, "n_local_trials")
  w = _weights(sample_weight, n, x.dtype)
  if valid is not None:
    w = jnp.where(valid, w, 0)
  x_orig = x
  mean, _ = sharding.mean_and_variance(x, valid, shard)
  x = x - mean[None, :]  # distances by matrix products need centred data
  x_sq = _sq_norms(x)
  key_first, key_rest = jax.random.split(key)
  uniforms = jax.random.uniform(key_rest, (num_clusters, n_local_trials), x.dtype)

  def dist_to(points):  # (L, D) -> (n, L); this layout of the product was the faster on CPU
    d = x_sq[:, None] - 2 * _cross(x, points) + _sq_norms(points)[None, :]
    return jnp.maximum(d, 0)

  w_cdf = jnp.cumsum(sharding.gather(w, shard))
  first = _searchsorted_right_clipped(w_cdf, jax.random.uniform(key_first, (), x.dtype) * w_cdf[-1])
  closest = dist_to(sharding.take(x, first[None], shard))[:, 0]
  indices = jnp.zeros((num_clusters,), jnp.int32).at[0].set(first)

  def body(c, state):
    indices, closest = state
    cdf = jnp.cumsum(sharding.gather(w * closest, shard))
    candidates = _searchsorted_right_clipped(cdf, uniforms[c] * cdf[-1])
    dist = jnp.minimum(closest[:, None], dist_to(sharding.take(x, candidates, shard)))  # (n, L)
    potentials = sharding.psum(jnp.matmul(w, dist, precision=_PRECISION), shard)
    best = jnp.argmin(potentials)
    return indices.at[c].set(candidates[best]), dist[:, best]

  last = num_clusters if num_active is None else jnp.asarray(num_active, jnp.int32)
  indices, _ = lax.fori_loop(1, last, body, (indices, closest))
  return sharding.take(x_orig, indices, shard), indices


def random_init(key: Key, x: DataLike, num_clusters: int,
                sample_weight: WeightsLike | None = None, *, valid: ArrayLike | None = None,
                shard: Shard | None = None) -> tuple[Centroids, Labels]:
  """K distinct rows of x drawn without replacement with probability proportional to the weight.

  scikit-learn's ``init="random"``. If fewer than K points have positive weight, the remaining
  centroids are points of weight 0 (which ones is unspecified).

  Args:
    key: PRNG key.
    x: (N, D) points.
    num_clusters: K (static), at most N.
    sample_weight: (N,) non-negative weights, or None for 1.
    valid: optional (N,) bool mask of the real rows (padding rows are never chosen).
    shard: None on one device; inside ``shard_map``, a :class:`lvmjax.sharding.Shard` (``x``
      holds this device's rows): the same draws as on one device from the gathered weights.

  Returns:
    ``(centroids, indices)``: (K, D) chosen rows and their (K,) int32 (global) indices.

  Examples:
    >>> c, idx = random_init(jax.random.key(0), jnp.arange(10.)[:, None], 3)
    >>> c.shape
    (3, 1)
  """
  x = _as_float(x)
  n = x.shape[0]
  w = _weights(sample_weight, n, x.dtype)
  if valid is not None:
    w = jnp.where(valid, w, 0)
  w = sharding.gather(w, shard)
  num_points = n if shard is None else shard.layout.num_points
  # Gumbel top-k: without replacement, probabilities proportional to w.
  gumbel = jax.random.gumbel(key, (num_points,), x.dtype)
  scores = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1)) + gumbel, -jnp.inf)
  _, indices = lax.top_k(scores, num_clusters)
  indices = indices.astype(jnp.int32)
  return sharding.take(x, indices, shard), indices


# ------------------------------------------------------------------------------------------------
# Lloyd's iterations (jitted at the fit boundary).
# ------------------------------------------------------------------------------------------------


class _Data(NamedTuple):
  """Centred, padded data; rows past the real N have weight 0 and valid False."""
  x: jax.Array  # (N_pad, D)
  x_sq: jax.Array  # (N_pad,)
  w: jax.Array  # (N_pad,)
  xw: jax.Array  # (N_pad, D) w * x, loop-invariant (x itself when unweighted)
  valid: jax.Array  # (N_pad,) bool


def resolve_algorithm(algorithm: str, num_clusters: int, num_points: int) -> str:
  """The assignment algorithm `fit` runs for ``algorithm``, K clusters and N points.

  ``"auto"`` is ``"hamerly"`` on CPU for K > 8 and N * K >= 2^20 (there the distance products
  are the cost of an iteration, and the bounds skip most of them once the fit settles), and
  ``"lloyd"`` otherwise: few clusters are compared elementwise, small problems cost little
  either way (and compile a smaller program), and an accelerator computes every distance faster
  than it packs the rows left to assign. Other values are returned as they are.

  Examples:
    >>> resolve_algorithm("lloyd", 64, 10**6)
    'lloyd'
    >>> resolve_algorithm("auto", 3, 10**6)
    'lloyd'
  """
  if algorithm != "auto":
    return algorithm
  large = num_clusters > _SMALL_K and num_points * num_clusters >= 2**20
  return "hamerly" if large and jax.default_backend() == "cpu" else "lloyd"


def _active_mask(num_clusters: int, num_active: Any) -> jax.Array | None:
  """(K,) bool, True for the first ``num_active`` clusters; None when all K are active."""
  if num_active is None:
    return None
  return jnp.arange(num_clusters) < jnp.asarray(num_active, jnp.int32)


def _active_sq_norms(c: jax.Array, active: jax.Array | None) -> jax.Array:
  """||c_k||^2, inf for the clusters outside ``active`` (a (K,) mask whose first entry is True):
  in the distances' expansion they are at infinite distance."""
  c_sq = _sq_norms(c)
  return c_sq if active is None else jnp.where(active, c_sq, jnp.inf)


def _assign_chunks(data: _Data, c: jax.Array, num_chunks: int,
                   active: jax.Array | None = None, block_fn: Any = None) -> tuple:
  """``block_fn(x, x_sq, c, c_sq)`` (default `_assign_block`: `assign`) over the padded data,
  in row blocks with `lax.map`, its outputs joined over the rows; clusters outside ``active``
  are at infinite distance (`_active_sq_norms`)."""
  block_fn = _assign_block if block_fn is None else block_fn
  c_sq = _active_sq_norms(c, active)
  if num_chunks == 1:
    return block_fn(data.x, data.x_sq, c, c_sq)
  n_pad, dim = data.x.shape
  chunk = n_pad // num_chunks
  out = lax.map(lambda a: block_fn(a[0], a[1], c, c_sq),
                (data.x.reshape(num_chunks, chunk, dim), data.x_sq.reshape(num_chunks, chunk)))
  return tuple(o.reshape(-1) for o in out)


def _e_and_sums(data: _Data, c: jax.Array, num_clusters: int, num_chunks: int,
                active: jax.Array | None = None):
  """Assignment step and the sufficient statistics (Σ w x, Σ w) of each cluster.

  The assignment runs in row blocks; the sums are then one segment sum over all rows of the
  precomputed w * x. (Summing per block inside the scan was 2x slower per iteration on CPU: XLA's
  scatter is fast only on a plain buffer, not on a slice or a fused product.)
  """
  labels, min_d = _assign_chunks(data, c, num_chunks, active)
  sums, weights = _segment_sums(data.xw, data.w, labels, num_clusters)
  return labels, min_d, sums, weights


def _two_closest(x: jax.Array, x_sq: jax.Array, c: jax.Array,
                 c_sq: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Labels, and the distances (not squared) to the closest and the second closest centroid,
  of one block of rows. The labels are `_assign_block`'s (first index on ties); the distances
  come from the same matrix-product expansion, clamped at 0 (the second is inf for K = 1)."""
  partial, labels, first = _closest_columns(x, c, c_sq)
  index = jnp.arange(c.shape[0], dtype=jnp.int32)[:, None]
  second = jnp.min(jnp.where(index == labels[None, :], jnp.inf, partial), axis=0)
  return (labels, jnp.sqrt(jnp.maximum(first + x_sq, 0)),
          jnp.sqrt(jnp.maximum(second + x_sq, 0)))


class _Bounds(NamedTuple):
  """Hamerly's bounds (in distances, not squared), per row: ``upper`` >= the distance to the
  row's centroid, ``lower`` <= the distance to every other centroid."""
  upper: jax.Array  # (N_pad,)
  lower: jax.Array  # (N_pad,)


def _margin(data: _Data, c: jax.Array, active: jax.Array | None) -> jax.Array:
  r"""(N_pad,) the gap ``lower - upper`` above which a row's label is certainly the one the
  matrix-product assignment (`_assign_block`) would give it.

  A squared distance by the expansion :math:`\lVert x\rVert^2 - 2 x^\top c + \lVert c\rVert^2`
  is off by at most :math:`E = (D + 3)\,\epsilon\,(\lVert x\rVert + \max_k\lVert c_k\rVert)^2`
  (the dot product's and the sums' rounding, :math:`\epsilon` the dtype's). The bounds come from
  such distances, so each may be off by :math:`\sqrt E`, and two expanded squared distances
  whose true values differ by more than :math:`2E` compare as the true ones do; a gap between
  the true distances above :math:`\sqrt{2E}` gives that. So a gap of
  :math:`(2 + \sqrt 2)\sqrt E` between the bounds keeps a row's label exactly as Lloyd's
  assignment would set it; the factor 1.01 covers the rounding of this margin itself.
  """
  eps = jnp.finfo(data.x.dtype).eps
  norms = jnp.sqrt(_sq_norms(c))
  if active is not None:
    norms = jnp.where(active, norms, 0)
  coef = (2 + math.sqrt(2)) * jnp.sqrt((data.x.shape[1] + 3) * eps * 1.01)
  return coef * (jnp.sqrt(data.x_sq) + jnp.max(norms))


def _half_gaps(c: jax.Array, active: jax.Array | None) -> jax.Array:
  """(K,) half the distance from each centroid to its closest other (active) centroid, rounded
  down; inf where there is none."""
  k = c.shape[0]
  d = jnp.sqrt(_sq_norms(c[:, None, :] - c[None, :, :]))  # (K, K), direct differences
  other = ~jnp.eye(k, dtype=bool)
  if active is not None:
    other = other & active[None, :]
  eps = jnp.finfo(c.dtype).eps
  return 0.5 * jnp.min(jnp.where(other, d, jnp.inf), axis=1) * (1 - 4 * (c.shape[1] + 2) * eps)


def _assign_pruned(data: _Data, c: jax.Array, c_sq: jax.Array, labels: jax.Array,
                   bounds: _Bounds, need: jax.Array, block: int
                   ) -> tuple[jax.Array, _Bounds]:
  """The assignment step for the rows marked ``need`` only (Hamerly's algorithm).

  The rows to assign are taken in order, ``block`` at a time, as many blocks as there are such
  rows: block j holds the rows of rank j * block + 1 ... (the rank of a row is the running count
  of ``need``; a binary search over the ranks finds the rows, so a block costs O(block log N)
  and no pass over all N rows). Each block's labels and distances go to a packed buffer, and
  every assigned row reads its own back by its rank: gathers only, no scatter. The other rows
  keep their labels and bounds.
  """
  n_pad = data.x.shape[0]
  rank = jnp.cumsum(need, dtype=jnp.int32)
  num_blocks = (rank[-1] + block - 1) // block
  offsets = jnp.arange(1, block + 1, dtype=jnp.int32)
  packed = (jnp.zeros((n_pad,), jnp.int32), jnp.zeros((n_pad,), data.x.dtype),
            jnp.zeros((n_pad,), data.x.dtype))

  def body(j, packed):
    ids = jnp.searchsorted(rank, j * block + offsets, side="left")  # past the last: n_pad
    ids = jnp.minimum(ids, n_pad - 1)
    rows = data.x.at[ids].get(mode="promise_in_bounds")
    rows_sq = data.x_sq.at[ids].get(mode="promise_in_bounds")
    out = _two_closest(rows, rows_sq, c, c_sq)
    return tuple(lax.dynamic_update_slice_in_dim(p, o, j * block, 0)
                 for p, o in zip(packed, out))

  new_labels, upper, lower = lax.fori_loop(0, num_blocks, body, packed)
  at = jnp.maximum(rank - 1, 0)
  pick = lambda new, old: jnp.where(need, new.at[at].get(mode="promise_in_bounds"), old)
  return pick(new_labels, labels), _Bounds(pick(upper, bounds.upper), pick(lower, bounds.lower))


def _needs_distances(data: _Data, c: jax.Array, labels: jax.Array, bounds: _Bounds,
                     active: jax.Array | None) -> jax.Array:
  """(N_pad,) bool: the rows whose label the bounds do not settle (Hamerly's two tests: the
  gap to the second closest centroid, and half the gap between the row's centroid and its
  closest other centroid), and every row before the first assignment (``labels == -1``)."""
  margin = _margin(data, c, active)
  half = _half_gaps(c, active)[jnp.maximum(labels, 0)]
  settled = jnp.maximum(bounds.lower - bounds.upper, 2 * (half - bounds.upper)) > margin
  return ~settled | (labels < 0)


def _move_bounds(bounds: _Bounds, labels: jax.Array, c_old: jax.Array,
                 c_new: jax.Array) -> _Bounds:
  """Hamerly's update of the bounds after the centroids move: the upper bound grows by the move
  of the row's centroid, the lower bound shrinks by the largest move of another centroid.
  Rounded outwards, so that float rounding never makes a bound wrong."""
  eps = jnp.finfo(c_old.dtype).eps
  move = jnp.sqrt(_sq_norms(c_new - c_old)) * (1 + 4 * (c_old.shape[1] + 2) * eps)
  top = jnp.argmax(move)
  largest = move[top]
  runner_up = jnp.max(jnp.where(jnp.arange(move.shape[0]) == top, 0, move))
  other = jnp.where(labels == top, runner_up, largest)
  upper = (bounds.upper + move[jnp.maximum(labels, 0)]) * (1 + 2 * eps)
  lower = bounds.lower - other
  lower = jnp.where(jnp.isfinite(lower), lower - 2 * eps * (jnp.abs(lower) + other), lower)
  return _Bounds(upper, lower)


# Above this fraction of rows left to assign, Hamerly's step assigns every row (`_lloyd`).
_DENSE_FRACTION = 0.5


def _segment_sums_sq(data: _Data, labels: jax.Array, num_clusters: int):
  """`_segment_sums` and Σ_{z_i=k} w_i ||x_i||^2 (K,), for the inertia from the sums."""
  sums, weights = _segment_sums(data.xw, data.w, labels, num_clusters)
  return sums, weights, jax.ops.segment_sum(data.w * data.x_sq, labels, num_clusters)


class _LloydState(NamedTuple):
  """The iterate of Lloyd's fixed-point loop."""
  centroids: jax.Array  # (K, D)
  labels: jax.Array  # (N_pad,) labels of the last assignment (-1 before the first)
  strict: jax.Array  # bool: the last assignment changed no label
  bounds: _Bounds | None = None  # Hamerly's bounds for ``centroids`` (algorithm "hamerly")


def _lloyd(data: _Data, centroids: jax.Array, tol_abs: jax.Array, *, num_clusters: int,
           max_iter: int, num_chunks: int, shard: Shard | None = None,
           active: jax.Array | None = None, algorithm: str = "lloyd") -> KMeansResult:
  """One run of Lloyd's algorithm, as scikit-learn's ``_kmeans_single_lloyd``.

  The loop is :func:`lvmjax.fixed_point.fixed_point` with a step that reports its own
  convergence (labels unchanged, or centroid shift <= ``tol_abs``) and monitors the inertia.
  With rows split over devices (``shard``) every total over rows is a ``psum`` and the
  relocation of empty clusters is collective; on one device (``shard=None``) both are local.
  Clusters outside ``active`` (a (K,) mask) take no points and keep their centroids.

  ``algorithm="hamerly"`` computes the same iterates with fewer distances: each row carries
  Hamerly's (2010) bounds on its distance to its centroid and to the others, moved by the
  centroids' shifts each iteration, and only the rows the bounds do not settle (with a margin
  for the rounding of the matrix-product distances, `_margin`) are assigned again. The inertia
  of each iteration then comes from the per-cluster sums (Σ w ||x||^2 - 2 c·Σ w x +
  Σ w ||c||^2) instead of the per-row distances.
  """
  n_pad = data.x.shape[0]
  pruned = algorithm == "hamerly"

  def assign_pruned(c, labels, bounds):
    need = _needs_distances(data, c, labels, bounds, active)
    # Packing rows costs more than the distances it saves when most rows need them: then all
    # rows are assigned in contiguous blocks (as Lloyd's step, keeping the second distance).
    dense = jnp.sum(need, dtype=jnp.int32) > _DENSE_FRACTION * n_pad

    def assign_all(carry):
      labels, upper, lower = _assign_chunks(data, c, num_chunks, active, _two_closest)
      return labels, _Bounds(upper, lower)

    def assign_needed(carry):
      return _assign_pruned(data, c, _active_sq_norms(c, active), *carry, need,
                            n_pad // num_chunks)

    labels, bounds = _run_if(dense, assign_all, (labels, bounds))
    return _run_if(~dense, assign_needed, (labels, bounds))

  def step(state: _LloydState):
    c, labels_old = state.centroids, state.labels
    if pruned:
      labels, bounds = assign_pruned(c, labels_old, state.bounds)
      sums, weights, sq = _segment_sums_sq(data, labels, num_clusters)
      sums, weights, sq = sharding.psum((sums, weights, sq), shard)
      # Inertia of these labels against c from the sums (clusters of weight 0 add 0).
      value = jnp.sum(jnp.maximum(sq - 2 * jnp.sum(c * sums, axis=1) + weights * _sq_norms(c),
                                  0))
    else:
      labels, min_d, sums, weights = _e_and_sums(data, c, num_clusters, num_chunks, active)
      sums, weights = sharding.psum((sums, weights), shard)
      value = sharding.psum(jnp.sum(data.w * min_d), shard)
    sums, weights = _relocate_empty(data.x, data.w, labels, data.valid, c, sums, weights, shard,
                                    active)
    c_new = _average(sums, weights)
    if active is not None:
      c_new = jnp.where(active[:, None], c_new, c)
    strict = sharding.psum(jnp.sum((labels != labels_old) & data.valid), shard) == 0
    shift = jnp.sum((c_new - c) ** 2)
    bounds = _move_bounds(bounds, labels, c, c_new) if pruned else None
    return _LloydState(c_new, labels, strict, bounds), value, strict | (shift <= tol_abs)

  bounds = None
  if pruned:
    bounds = _Bounds(jnp.full((n_pad,), jnp.inf, data.x.dtype), jnp.zeros((n_pad,), data.x.dtype))
  init = _LloydState(centroids, jnp.full((n_pad,), -1, jnp.int32), jnp.bool_(False), bounds)
  out = fixed_point.fixed_point(step, init, tol=tol_abs, max_iter=max_iter, dtype=data.x.dtype)
  c, labels, strict, bounds = out.iterate
  # Unless the labels were already stable, re-assign so that labels match the final centroids.
  if pruned:
    final = lambda: assign_pruned(c, labels, bounds)[0]
  else:
    final = lambda: _assign_chunks(data, c, num_chunks, active)[0]
  labels = lax.cond(strict, lambda: labels, final)
  value = sharding.psum(_direct_inertia(data.x, data.w, c, labels), shard)
  return KMeansResult(c, labels, value, out.n_iter, out.converged, out.history)


def fit_local(key: Key, x: jax.Array, w: jax.Array | None, valid: jax.Array | None,
              init_centroids: jax.Array | None, tol: ArrayLike, shard: Shard | None = None, *,
              num_clusters: int, init_kind: str, n_init: int, max_iter: int,
              chunk_size: int | None = None, unit_weights: bool = False,
              num_active: ArrayLike | None = None, algorithm: str = "auto") -> KMeansResult:
  r"""The whole K-means fit on a block of rows: one device, or one device's rows of a mesh.

  `fit` runs it under ``jit`` (``shard=None``) or inside ``shard_map`` (a
  :class:`lvmjax.sharding.Shard`); call it inside a ``shard_map`` of one's own to initialise
  another model (the GMM's sharded EM does). The data are centred on the unweighted mean of
  the real rows, the tolerance is ``tol * mean_d Var(x_d)`` (scikit-learn's), the ``n_init``
  restarts are one ``vmap`` and the restart of lowest inertia wins.

  Args:
    key: PRNG key (replicated).
    x: (n, D) the rows (on a mesh: this device's block of ``shard.layout.block_rows`` rows,
      possibly padded further locally).
    w: (n,) weights, or None for 1.
    valid: (n,) bool mask of the real rows, or None when all are real (one device only).
    init_centroids: (K, D) for ``init_kind == "array"``, else None.
    tol: relative tolerance (scalar).
    shard: the reduction hook: None on one device, a ``Shard`` inside ``shard_map``.
    num_clusters: K (static).
    init_kind: "k-means++", "random" or "array".
    n_init: restarts (vmapped).
    max_iter: most Lloyd iterations.
    chunk_size: rows per assignment block (None: :func:`default_chunk_size`).
    unit_weights: ``w`` is 1 on every row that ``valid`` marks (a mesh's padding weights of an
      unweighted fit), so the weighted rows are the centred rows themselves: no copy is made.
    num_active: None, or k <= K (traced): fit k clusters in this K-cluster program (`fit`).
    algorithm: "lloyd", "hamerly" or "auto" (`fit`); the same iterates.

  Returns:
    A `KMeansResult` with replicated centroids and statistics and the (n,) labels of these rows.
  """
  x = _as_float(x)
  w = None if w is None else jnp.asarray(w, x.dtype)
  n = x.shape[0]
  if chunk_size is None:
    chunk_size = default_chunk_size(num_clusters)
  if w is not None and valid is not None:
    w = jnp.where(valid, w, 0)
  mean, var = sharding.mean_and_variance(x, valid, shard)
  xc = x - mean[None, :]
  if valid is not None:
    xc = jnp.where(valid[:, None], xc, 0)
  tol_abs = tol * jnp.mean(var)  # scikit-learn's _tolerance, unweighted
  num_chunks = _num_chunks(n, min(chunk_size, n))
  n_pad = n if num_chunks == 1 else num_chunks * min(chunk_size, n)
  x_pad = _pad_rows(xc, n_pad)
  w_pad = _pad_rows(jnp.ones((n,), x.dtype) if w is None else w, n_pad)
  # (The centred rows are 0 where w is 0 by `valid`: with unit weights w * x is x.)
  xw = x_pad if w is None or unit_weights else x_pad * w_pad[:, None]
  valid_pad = jnp.arange(n_pad) < n if valid is None else _pad_rows(valid, n_pad)
  data = _Data(x_pad, _sq_norms(x_pad), w_pad, xw, valid_pad)
  active = _active_mask(num_clusters, num_active)
  algorithm = resolve_algorithm(algorithm, num_clusters,
                                n if shard is None else shard.layout.num_points)

  def one(k):
    if init_kind == "array":
      c0 = init_centroids - mean[None, :]
    elif init_kind == "k-means++":
      c0, _ = kmeans_plusplus(k, xc, num_clusters, w, valid=valid, shard=shard,
                              num_active=num_active)
    else:  # the first k of K draws without replacement are k draws without replacement
      c0, _ = random_init(k, xc, num_clusters, w, valid=valid, shard=shard)
    return _lloyd(data, c0, tol_abs, num_clusters=num_clusters, max_iter=max_iter,
                  num_chunks=num_chunks, shard=shard, active=active, algorithm=algorithm)

  if n_init == 1:
    result = one(key)
  else:
    results = jax.vmap(one)(jax.random.split(key, n_init))
    best = jnp.argmin(results.inertia)  # first best on ties, as scikit-learn keeps the first
    result = jax.tree.map(lambda a: a[best], results)
  return result._replace(centroids=result.centroids + mean[None, :], labels=result.labels[:n])


_STATIC = ("num_clusters", "init_kind", "n_init", "max_iter", "chunk_size", "algorithm")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _fit_jit(key, x, w, init_centroids, tol, num_active, *, num_clusters, init_kind, n_init,
             max_iter, chunk_size, algorithm):
  return fit_local(key, x, w, None, init_centroids, tol, None, num_clusters=num_clusters,
                   init_kind=init_kind, n_init=n_init, max_iter=max_iter, chunk_size=chunk_size,
                   num_active=num_active, algorithm=algorithm)


@functools.partial(jax.jit, static_argnames=_STATIC + ("mesh", "axis_name", "layout",
                                                   "unit_weights"))
def _fit_sharded_jit(key, x, w, init_centroids, tol, num_active, *, num_clusters, init_kind,
                     n_init, max_iter, chunk_size, algorithm, mesh, axis_name, layout,
                     unit_weights):
  shard = Shard(axis_name, layout)
  spec = P(axis_name)

  def local(key, x, w, init_centroids, tol, num_active):
    _, valid = sharding.local_rows(axis_name, layout, x.shape[0])
    return fit_local(key, x, w, valid, init_centroids, tol, shard, num_clusters=num_clusters,
                     init_kind=init_kind, n_init=n_init, max_iter=max_iter,
                     chunk_size=chunk_size, unit_weights=unit_weights, num_active=num_active,
                     algorithm=algorithm)

  out_specs = KMeansResult(P(), spec, P(), P(), P(), P())
  r = jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec, P(), P(), P()),
                    out_specs=out_specs, check_vma=False)(key, x, w, init_centroids, tol,
                                                          num_active)
  return r._replace(labels=r.labels[:layout.num_points])


# ------------------------------------------------------------------------------------------------
# Public entry point.
# ------------------------------------------------------------------------------------------------


def _check_centroids(c: Any, num_clusters: int | None, dim: int, name: str) -> None:
  shape = np.shape(c)
  if len(shape) != 2 or shape[1] != dim or (num_clusters is not None and shape[0] != num_clusters):
    want = f"({num_clusters if num_clusters is not None else 'K'}, {dim})"
    raise ValueError(f"{name} must have shape {want} (num_clusters, num_features of x); "
                     f"got {shape}.")
  if shape[0] < 1:
    raise ValueError(f"{name} must have at least one row, got shape {shape}.")
  if _checks.is_concrete(c):
    arr = np.asarray(c)
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
      raise ValueError(f"{name} must be numeric and finite (no NaN or inf).")


def _check_chunk_size(chunk_size: Any) -> None:
  if chunk_size is not None:
    _checks.check_positive_int(chunk_size, "chunk_size")


def _check_fit_args(n, dim, num_clusters, init, n_init, max_iter, tol, chunk_size, *,
                    stacklevel):
  """Checks ``fit``'s arguments for N points in ``dim`` dimensions (one device and mesh alike).

  Returns (num_clusters, n_init, max_iter, tol, chunk_size, init_kind); an array ``init``
  with ``n_init > 1`` warns and gives ``n_init = 1``.
  """
  num_clusters = _checks.check_positive_int(num_clusters, "num_clusters")
  if num_clusters > n:
    raise ValueError(
        f"num_clusters={num_clusters} is larger than the number of points N={n}; use at most "
        f"{n} clusters.")
  n_init = _checks.check_positive_int(n_init, "n_init")
  max_iter = _checks.check_positive_int(max_iter, "max_iter", minimum=0)
  tol = _checks.check_nonnegative(tol, "tol")
  _check_chunk_size(chunk_size)
  if chunk_size is None:
    chunk_size = default_chunk_size(num_clusters)
  if isinstance(init, str):
    return (num_clusters, n_init, max_iter, tol, chunk_size,
            _checks.check_choice(init, "init", INIT_METHODS))
  _check_centroids(init, num_clusters, dim, "init")
  if n_init != 1:
    warnings.warn(f"An array init gives one run; n_init={n_init} is ignored.",
                  stacklevel=stacklevel)
    n_init = 1
  return num_clusters, n_init, max_iter, tol, chunk_size, "array"


def fit(key: Key, x: DataLike, num_clusters: int, init: str | ArrayLike = "k-means++",
        n_init: int = 1, max_iter: int = 300, tol: float = 1e-4,
        sample_weight: WeightsLike | None = None, *, chunk_size: int | None = None,
        mesh: jax.sharding.Mesh | None = None, axis_name: str | None = None,
        num_active: int | ArrayLike | None = None, algorithm: str = "auto") -> KMeansResult:
  r"""K-means by Lloyd's algorithm, as scikit-learn's ``KMeans(algorithm="lloyd")``.

  Minimises :math:`J = \sum_i w_i \lVert x_i - c_{z_i}\rVert^2`. Each iteration assigns every
  point to its closest centroid and moves each centroid to the weighted mean of its points
  (empty clusters: see `update_centroids`). As in scikit-learn:

  * the data are centred (``x - mean(x)``) inside, so the matrix-product distances keep their
    precision in float32; the centroids are returned in the original coordinates;
  * ``tol`` is relative: the run stops when the squared Frobenius norm of the centroid shift
    :math:`\sum_k \lVert c_k^{new} - c_k\rVert^2 \le \mathrm{tol}\cdot\mathrm{mean}_d\,
    \mathrm{Var}(x_{:, d})` (unweighted variances), or, before that test, when no label changed
    ("strict convergence"; never on the first iteration);
  * ``n_iter`` counts the iterations run, including the one that met the test;
  * unless the labels were stable, the labels are recomputed against the final centroids, and the
    inertia is that of the final centroids and labels.
  * with an array ``init``, ``n_init`` is ignored (one run, with a warning).

  From the same initial centroids the result equals scikit-learn's (to rounding). The whole fit
  is one jitted call per shape and configuration; the ``n_init`` restarts are one `jax.vmap`
  over keys, and the restart of lowest inertia is returned.

  ``max_iter=0`` (which scikit-learn rejects) runs no iteration: the initial centroids are
  returned with their labels and inertia, ``n_iter=0`` and ``converged=False``.

  Args:
    key: PRNG key for the initialisation (unused with an array ``init``).
    x: (N, D) data.
    num_clusters: K, 1 <= K <= N.
    init: ``"k-means++"`` (`kmeans_plusplus`), ``"random"`` (K rows drawn without replacement
      with probability proportional to the weight), or a (K, D) array of initial centroids.
    n_init: number of restarts (vmapped); the one of lowest inertia wins.
    max_iter: maximum number of Lloyd iterations (>= 0).
    tol: relative tolerance on the centroid shift (>= 0), see above.
    sample_weight: (N,) non-negative weights (not all 0), or None for 1: weighted means,
      weighted inertia, weighted seeding.
    chunk_size: rows per block: the assignment and the cluster sums run over blocks in
      sequence with `lax.scan`, so memory is O(chunk_size * K + N * D) instead of O(N * K). None
      picks a size, see `assign`.
    mesh: a ``jax.sharding.Mesh`` to split the rows of x over (its ``axis_name`` axis, default
      "data"): each Lloyd iteration adds the devices' statistics with one ``psum``
      (`fit_local` inside ``shard_map``); the fit equals the one-device fit up to float rounding. A
      ``jax.Array`` whose rows are already split by a ``NamedSharding`` is fitted this way
      without ``mesh``, and large data on a multi-core CPU are split by themselves
      (:func:`lvmjax.sharding.auto_placement`).
    axis_name: the mesh axis of the rows (default: "data", else the mesh's first axis).
    num_active: None (all K clusters), or k with 1 <= k <= K, an int or an int32 scalar that may
      be traced: fit k clusters inside the program compiled for K, so that one compilation
      serves every k (a sweep over the number of clusters, e.g. ``experiments/fit_kmeans``'s).
      Clusters k.. take no points: the labels are below k, ``centroids[:k]`` are the k-cluster
      fit and the later rows keep their initial values (placeholders). The seeding draws the first k centres of K
      (k-means++ with ``n_local_trials`` of K, so its draws differ from a K=k fit's); from an
      array ``init`` (whose rows k.. are ignored) the fit equals that of ``init[:k]``.
    algorithm: how the assignment step finds the closest centroids; every choice runs Lloyd's
      iterations (the same labels, centroids and ``n_iter``, up to float rounding: a point
      whose two closest centroids are within rounding of each other may go either way, as it
      may in Lloyd's own step with another ``chunk_size``). ``"lloyd"``: every distance, every
      iteration, by matrix products. ``"hamerly"`` (Hamerly 2010, "Making k-means even
      faster"): each point keeps an upper bound on the distance to its centroid and a lower
      bound on the distance to every other, moved by the centroids' shifts, and only the points
      whose bounds do not settle their label (with a margin that covers the rounding of the
      distances) are assigned again, a fraction that falls as the fit settles; the inertia
      history is then computed from the clusters' sums, which rounds differently (float32:
      about 1e-6 relative). ``"auto"`` (`resolve_algorithm`): "hamerly" on CPU for K > 8 and
      N * K >= 2^20, else "lloyd".

  Returns:
    A `KMeansResult`.

  Raises:
    ValueError: for non-finite or non-2-D ``x``, ``num_clusters`` < 1 or > N, ``n_init`` < 1,
      ``max_iter`` < 0, ``tol`` < 0, an unknown ``init``, an ``init`` array not of shape (K, D)
      or not finite, a bad ``sample_weight`` or ``chunk_size``, ``num_active`` not in [1, K], an
      unknown ``algorithm``.

  Examples:
    >>> x = jnp.array([[0., 0.], [0., 1.], [10., 10.], [10., 11.]])
    >>> result = fit(jax.random.key(0), x, 2)
    >>> sorted(result.centroids[:, 1].tolist())
    [0.5, 10.5]
  """
  _checks.check_fit_inputs(key, x)  # a PRNG key; float32/float64 data (ints converted)
  placement = sharding.mesh_of(x, mesh, axis_name)
  sharding.check_data(x)
  n, dim = np.shape(x)
  sharding.check_sample_weight(sample_weight, n)
  num_clusters, n_init, max_iter, tol, chunk_size, init_kind = _check_fit_args(
      n, dim, num_clusters, init, n_init, max_iter, tol, chunk_size, stacklevel=3)
  num_active = _checks.check_num_active(num_active, num_clusters, "num_clusters")
  algorithm = resolve_algorithm(_checks.check_choice(algorithm, "algorithm", ALGORITHMS),
                                num_clusters, n)
  if placement is None:  # no mesh given or found on x; large data on a multi-core CPU: every core
    placement = sharding.auto_placement(x, num_clusters)
  dtype = _float_dtype(x)
  static = dict(num_clusters=num_clusters, init_kind=init_kind, n_init=n_init, max_iter=max_iter,
                algorithm=algorithm)
  if placement is not None:
    # Rows split over the devices of a mesh: each Lloyd iteration adds the devices' statistics.
    mesh, axis_name = placement
    xs, ws, layout = sharding.place_rows(x, sample_weight, dtype, mesh, axis_name)
    init_centroids = None
    if init_kind == "array":  # via the host: it may be committed to one device
      init_centroids = np.asarray(jax.device_get(init), dtype)
    result = _fit_sharded_jit(key, xs, ws, init_centroids, jnp.asarray(tol, dtype), num_active,
                              chunk_size=chunk_size, mesh=mesh, axis_name=axis_name,
                              layout=layout, unit_weights=sample_weight is None, **static)
    if isinstance(placement, sharding.AutoMesh):
      result = sharding.to_first_device(result)
    return result
  chunk_size = min(chunk_size, n)  # one compiled function for every chunk_size >= N
  xf = _as_float(x)
  init_centroids = jnp.asarray(init, xf.dtype) if init_kind == "array" else None
  w = None if sample_weight is None else jnp.asarray(sample_weight, xf.dtype)
  return _fit_jit(key, xf, w, init_centroids, jnp.asarray(tol, xf.dtype), num_active,
                  chunk_size=chunk_size, **static)
