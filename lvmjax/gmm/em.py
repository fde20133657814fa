r"""EM for the Gaussian mixture as additive sufficient statistics.

The E-step maps rows to statistics that add up over rows, chunks, devices and batches from disk:

.. math::

  r_{nk} = p(z_n{=}k \mid x_n), \qquad
  N_k = \sum_n s_n r_{nk}, \qquad
  S^{(1)}_k = \sum_n s_n r_{nk} (x_n - c_k), \qquad
  S^{(2)}_k = \sum_n s_n r_{nk} (x_n - c_k)(x_n - c_k)^\top,

with sample weights :math:`s_n`, and the E-step's own means as centres :math:`c_k`. Moments about
the current means keep float32 exact where raw moments :math:`\sum r x x^\top / N - \mu\mu^\top`
cancel (a pixel that is constant within a component has variance exactly 0, not rounding noise
that swamps ``reg_covar``); the centres are the same for every chunk, so the sums still add.
"tied" keeps :math:`\sum_k S^{(2)}_k`, "diag" and "spherical" keep diagonals. The M-step is
closed-form on the sums:

.. math::

  w_k = N_k / \textstyle\sum_j N_j, \qquad
  \mu_k = c_k + S^{(1)}_k / N_k, \qquad
  \Sigma_k = S^{(2)}_k / N_k - (\mu_k - c_k)(\mu_k - c_k)^\top + \epsilon I.

The Mahalanobis terms are :math:`\|y_{nk}\|^2` with :math:`y_{nk} = L_k^{-1}(x_n - \mu_k)` and the
Cholesky factor's inverse from a triangular solve (as scikit-learn does): one matrix product of each
chunk by the stacked (K·D, D) inverse factors of all components. For "full" and "tied" the moments
are taken from the same whitened :math:`y` (K batched (D, n)(n, D) products of the weighted
:math:`y`) and mapped back with :math:`L_k` once per E-step, which saves forming the differences
twice; "diag" and "spherical" use the differences directly.
The E-step streams over chunks of rows with ``lax.scan``, so memory is O(chunk · K · D) and never
O(N · K · D). The convergence rule, ``tol``, ``max_iter`` and ``reg_covar`` follow scikit-learn's
``GaussianMixture``: iteration i records the mean log-likelihood of the parameters it starts from,
and the fit stops when it changes by less than ``tol``.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jax.sharding import PartitionSpec as P

from lvmjax import _checks
from lvmjax import linalg
from lvmjax import sharding
from lvmjax.gmm import model
from lvmjax.gmm.model import GMMParams

INITS = ("kmeans", "k-means++", "random", "random_from_data")


class SuffStats(NamedTuple):
  """Additive sufficient statistics of one E-step (sum them over chunks, devices or batches).

  Moments are about the means :math:`c_k` of the parameters the E-step was run with, so add only
  statistics taken with the same parameters (as every EM iteration does).

  Attributes:
    counts: (K,) :math:`N_k = \\sum_n s_n r_{nk}`.
    sum_x: (K, D) :math:`\\sum_n s_n r_{nk} (x_n - c_k)`.
    sum_xx: second moments about :math:`c_k`: (K, D, D) for "full", (D, D) summed over components
      for "tied", (K, D) diagonals for "diag" and "spherical".
    log_likelihood: scalar :math:`\\sum_n s_n \\log p(x_n)`.
    total_weight: scalar :math:`\\sum_n s_n`.
  """
  counts: jax.Array
  sum_x: jax.Array
  sum_xx: jax.Array
  log_likelihood: jax.Array
  total_weight: jax.Array


class GMMFitResult(NamedTuple):
  """What ``fit`` returns.

  Attributes:
    params: the fitted GMMParams (of the best restart).
    log_likelihood: mean per-point log-likelihood at each iteration, shape (n_iter,): entry i is
      that of the parameters iteration i started from (scikit-learn's ``lower_bounds_``). Under a
      transformation such as ``jax.vmap`` it keeps its full length ``max_iter`` and entries past
      ``n_iter`` are NaN.
    n_iter: number of EM iterations run.
    converged: whether the change in mean log-likelihood fell below ``tol``.
    lower_bound: the last entry of ``log_likelihood`` (-inf when ``max_iter == 0``); the best
      restart is the one with the largest.
  """
  params: GMMParams
  log_likelihood: jax.Array
  n_iter: jax.Array
  converged: jax.Array
  lower_bound: jax.Array


# --------------------------------------------------------------------------------------------
# Statistics.


def _log_joint_fn(params: GMMParams):
  """For "diag" and "spherical": a function of (x (n, D), x - mu_k (K, n, D)) giving
  log w_k + log N(x; mu_k, Sigma_k), (n, K), from the differences ("full" and "tied" take the
  whitened path of :func:`_whitened_scan`)."""
  k, d = params.means.shape
  chol = model.cholesky(params)
  const = jnp.log(params.weights) - 0.5 * d * math.log(2 * math.pi)
  var = jnp.square(chol)
  if params.covariance_type == "spherical":
    var = jnp.broadcast_to(var[:, None], (k, d))
  offset = const - 0.5 * jnp.sum(jnp.log(var), axis=1)
  inv_var = 1.0 / var

  def log_joint_rows_diag(xc, diff):
    del xc
    return offset[None, :] - 0.5 * jnp.einsum("knd,kd->nk", diff * diff, inv_var)
  return log_joint_rows_diag


def _chunk_stats(diff, wr, log_px, w, covariance_type):
  """Statistics of one chunk: diff = x - c_k (K, n, D), wr = weighted responsibilities (n, K)."""
  wd = wr.T[:, :, None] * diff  # (K, n, D)
  counts = jnp.sum(wr, axis=0)
  sum_x = jnp.sum(wd, axis=1)
  if covariance_type == "full":
    sum_xx = jnp.swapaxes(wd, 1, 2) @ diff
  elif covariance_type == "tied":
    d = diff.shape[-1]
    sum_xx = wd.reshape(-1, d).T @ diff.reshape(-1, d)
  else:
    sum_xx = jnp.sum(wd * diff, axis=1)
  return SuffStats(counts, sum_x, sum_xx, jnp.sum(w * log_px), jnp.sum(w))


def _zero_stats(num_components, d, covariance_type, dtype):
  xx = model.covariance_shape(covariance_type, num_components, d)
  if covariance_type == "spherical":
    xx = (num_components, d)
  z = lambda shape: jnp.zeros(shape, dtype)  # pylint: disable=unnecessary-lambda-assignment
  return SuffStats(z((num_components,)), z((num_components, d)), z(xx), z(()), z(()))


def _scan(x_chunks, w_chunks, centers, covariance_type, resp_fn, shard=None):
  """Sums chunk statistics about ``centers`` (K, D) with lax.scan.

  ``resp_fn(i, x, diff) -> (resp (n, K), log p(x) (n,))`` with diff = x - centers, (K, n, D).
  With ``shard`` (inside ``shard_map``), ``i`` is the global chunk index and the sums are added
  over the devices with ``psum``.
  """
  k, d = centers.shape

  def body(acc, inputs):
    i, xc, wc = inputs
    diff = xc[None, :, :] - centers[:, None, :]
    resp, log_px = resp_fn(i, xc, diff)
    stats = _chunk_stats(diff, wc[:, None] * resp, log_px, wc, covariance_type)
    return jax.tree.map(jnp.add, acc, stats), None

  init = _zero_stats(k, d, covariance_type, x_chunks.dtype)
  index = jnp.arange(x_chunks.shape[0])
  if shard is not None:
    index = index + _first_chunk(shard, x_chunks.shape[0])
  out, _ = jax.lax.scan(body, init, (index, x_chunks, w_chunks))
  if shard is not None:
    out = jax.lax.psum(out, shard.axis_name)
  return out


def _whitened_scan(x_chunks, w_chunks, params: GMMParams, shard=None) -> SuffStats:
  r"""E-step statistics of "full" and "tied" mixtures, taken in each component's whitened frame.

  Per chunk, one matrix product gives :math:`y_{nk} = L_k^{-1}(x_n - \mu_k)` for all components
  at once, laid out (K, D, n); the log-joint needs :math:`\lVert y_{nk} \rVert^2`, and the same
  array gives the moments :math:`\sum_n r_{nk} y_{nk}` and :math:`\sum_n r_{nk} y_{nk}
  y_{nk}^\top` (K batched (D, n)(n, D) products), so the differences :math:`x_n - \mu_k` are never
  formed a second time. The sums are mapped back once, after the last chunk:
  :math:`S^{(1)}_k = L_k \sum r y`, :math:`S^{(2)}_k = L_k (\sum r y y^\top) L_k^\top`, moments
  about :math:`c_k = \mu_k` as :class:`SuffStats` defines them (the map is linear, so the sums
  still add over chunks, devices and batches).
  """
  cov_type = params.covariance_type
  k, d = params.means.shape
  dtype = x_chunks.dtype
  chol = model.cholesky(params)  # (K, D, D) full, (D, D) tied
  eye = jnp.broadcast_to(jnp.eye(d, dtype=dtype), chol.shape)
  chol_inv = linalg.triangular_solve(chol, eye, left_side=True, lower=True)
  offset = (jnp.log(params.weights) - 0.5 * d * math.log(2 * math.pi)
            - jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1))
  if cov_type == "full":
    w_t = chol_inv.reshape(k * d, d)  # row block k: L_k^{-1}
    b = jnp.einsum("kde,ke->kd", chol_inv, params.means)
  else:
    w_t = chol_inv
    b = params.means @ chol_inv.T
  n = x_chunks.shape[1]

  def body(acc, inputs):
    xc, wc = inputs
    y = (w_t @ xc.T).reshape(-1, d, n) - b[:, :, None]  # (K, D, n); tied broadcasts
    log_joint = offset[:, None] - 0.5 * jnp.sum(y * y, axis=1)  # (K, n)
    log_px = jax.nn.logsumexp(log_joint, axis=0)
    wr = jnp.exp(log_joint - log_px[None, :]) * wc[None, :]
    yw = y * wr[:, None, :]
    if cov_type == "full":
      gram = yw @ jnp.swapaxes(y, 1, 2)
    else:
      gram = jnp.einsum("kdn,ken->de", yw, y)
    stats = SuffStats(jnp.sum(wr, axis=1), jnp.sum(yw, axis=2), gram, jnp.sum(wc * log_px),
                      jnp.sum(wc))
    return jax.tree.map(jnp.add, acc, stats), None

  gram_shape = (k, d, d) if cov_type == "full" else (d, d)
  z = lambda shape: jnp.zeros(shape, dtype)  # pylint: disable=unnecessary-lambda-assignment
  init = SuffStats(z((k,)), z((k, d)), z(gram_shape), z(()), z(()))
  out, _ = jax.lax.scan(body, init, (x_chunks, w_chunks))
  if shard is not None:
    out = jax.lax.psum(out, shard.axis_name)
  if cov_type == "full":
    sum_x = jnp.einsum("kde,ke->kd", chol, out.sum_x)
    sum_xx = chol @ out.sum_xx @ jnp.swapaxes(chol, -1, -2)
  else:
    sum_x = out.sum_x @ chol.T
    sum_xx = chol @ out.sum_xx @ chol.T
  return out._replace(sum_x=sum_x, sum_xx=sum_xx)


def _em_stats(x_chunks, w_chunks, params: GMMParams, shard=None) -> SuffStats:
  """The E-step's statistics of ``params`` over the chunks (psum over ``shard``'s devices)."""
  if params.covariance_type in ("full", "tied"):
    return _whitened_scan(x_chunks, w_chunks, params, shard)
  return _scan(x_chunks, w_chunks, params.means, params.covariance_type, _posterior_fn(params),
               shard)


def _first_chunk(shard, num_local_chunks):
  """Inside ``shard_map``: global index of this device's first chunk."""
  return jax.lax.axis_index(shard.axis_name) * num_local_chunks


def _posterior_fn(params: GMMParams):
  log_joint_rows = _log_joint_fn(params)

  def resp_fn(_, xc, diff):
    lj = log_joint_rows(xc, diff)
    log_px = jax.nn.logsumexp(lj, axis=-1)
    return jnp.exp(lj - log_px[:, None]), log_px

  return resp_fn


def _chunks(x: jax.Array, sample_weight: jax.Array, chunk_size: int):
  """Pads rows to a multiple of chunk_size (weight 0) and reshapes to (num_chunks, chunk, ...)."""
  n = x.shape[0]
  num_chunks = -(-n // chunk_size)
  pad = num_chunks * chunk_size - n
  if pad:
    x = jnp.pad(x, ((0, pad), (0, 0)))
    sample_weight = jnp.pad(sample_weight, (0, pad))
  return (x.reshape(num_chunks, chunk_size, x.shape[1]),
          sample_weight.reshape(num_chunks, chunk_size))


def default_chunk_size(num_points: int, num_components: int, num_features: int) -> int:
  """Rows per chunk: about 2**19 floats of (K, D, chunk) intermediates, at least 64 rows.

  At 2**19 floats (2 MB) a chunk's whitened differences stay in the L2/L3 caches of a CPU; on a
  2-core EPYC, 2**19 was 1.3x faster per EM iteration than 2**20 at N=65,536, D=16, K=32.
  """
  rows = (2**19 // max(1, num_components * num_features)) // 8 * 8
  return int(min(num_points, max(64, rows)))


def _prepare(x: ArrayLike, sample_weight: ArrayLike | None, dtype=None):
  x = jnp.asarray(x)
  dtype = dtype or jnp.result_type(x.dtype, float)
  x = x.astype(dtype)
  if sample_weight is None:
    sample_weight = jnp.ones(x.shape[0], dtype)
  return x, jnp.asarray(sample_weight).astype(dtype)


def e_step(params: GMMParams, x: ArrayLike, sample_weight: ArrayLike | None = None, *,
           chunk_size: int | None = None, mesh: jax.sharding.Mesh | None = None,
           axis_name: str | None = None) -> SuffStats:
  r"""E-step: responsibilities and their additive statistics, streamed over chunks of rows.

  .. math::

    r_{nk} = \frac{w_k \mathcal{N}(x_n; \mu_k, \Sigma_k)}{\sum_j w_j \mathcal{N}(x_n; \mu_j, \Sigma_j)}

  Args:
    params: current parameters.
    x: (N, D) data.
    sample_weight: optional (N,) non-negative weights (default all ones).
    chunk_size: rows per chunk (default: see ``default_chunk_size``).
    mesh: a mesh whose ``axis_name`` axis splits the rows of x: each device sums its rows'
      statistics and one ``psum`` adds them. Works under ``jit`` (x a tracer) too; the row count
      must then be a multiple of the axis size. A concrete row-sharded ``jax.Array`` is detected
      without ``mesh``.
    axis_name: the mesh's data axis (default "data", else its first axis).

  Returns:
    ``SuffStats`` summed over all rows. Statistics of different row sets (taken with the same
    params) add: ``jax.tree.map(jnp.add, s1, s2)``, or ``jax.lax.psum`` across devices.
  """
  placement = sharding.mesh_of(x, mesh, axis_name)
  _check_x(x)
  model.check_params(params, np.shape(x)[1], check_values=False)
  _check_weight(sample_weight, np.shape(x)[0])
  if placement is not None:
    return _e_step_sharded(params, x, sample_weight, chunk_size, *placement)
  x, w = _prepare(x, sample_weight, params.means.dtype)
  chunk = chunk_size or default_chunk_size(x.shape[0], *params.means.shape)
  xs, ws = _chunks(x, w, min(chunk, x.shape[0]))
  return _em_stats(xs, ws, params)


def _e_step_sharded(params, x, sample_weight, chunk_size, mesh, axis_name):
  n = x.shape[0]
  shards = sharding.num_shards(mesh, axis_name)
  if n % shards:
    raise ValueError(f"x has {n} rows, not a multiple of the {shards} devices of mesh axis "
                     f"{axis_name!r}; pad it with weight-0 rows (lvmjax.sharding.shard_rows).")
  dtype = params.means.dtype
  x = jnp.asarray(x).astype(dtype) if not isinstance(x, jax.Array) else x.astype(dtype)
  w = jnp.ones((n,), dtype) if sample_weight is None else jnp.asarray(sample_weight).astype(dtype)
  chunk = min(chunk_size or default_chunk_size(n // shards, *params.means.shape), n // shards)
  spec = P(axis_name)

  def local(params, x, w):
    xs, ws = _chunks(x, w, chunk)
    return jax.lax.psum(_em_stats(xs, ws, params), axis_name)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec), out_specs=P(),
                       check_vma=False)(params, x, w)


def _repair_positive_definite(cov: jax.Array) -> jax.Array:
  """Adds a jitter of 100·eps·mean(diag) to the matrices whose Cholesky factorisation failed
  because float rounding left them indefinite (e.g. float32 data with exactly duplicated points).
  Matrices that factorise are returned unchanged."""
  bad = jnp.any(jnp.isnan(linalg.cholesky(cov)), axis=(-2, -1), keepdims=True)
  scale = jnp.mean(jnp.diagonal(cov, axis1=-2, axis2=-1), axis=-1)[..., None, None]
  finfo = jnp.finfo(cov.dtype)
  jitter = 100 * finfo.eps * jnp.maximum(scale, finfo.tiny)
  return cov + jnp.where(bad, jitter, 0.0) * jnp.eye(cov.shape[-1], dtype=cov.dtype)


def m_step(params: GMMParams, stats: SuffStats, reg_covar: float = 1e-6) -> GMMParams:
  r"""M-step: closed-form maximum-likelihood parameters from the E-step's statistics.

  .. math::

    w_k = \frac{N_k}{\sum_j N_j}, \quad
    \mu_k = c_k + \frac{S^{(1)}_k}{N_k}, \quad
    \Sigma_k = \frac{S^{(2)}_k}{N_k} - (\mu_k - c_k)(\mu_k - c_k)^\top + \epsilon I

  As in scikit-learn, :math:`N_k` gets :math:`10\,\mathrm{eps}` added, so a component that lost
  all its points keeps its mean and gets covariance :math:`\epsilon I` instead of NaN. A covariance
  that float rounding left indefinite gets a jitter of 100·eps·mean(diag) on its diagonal.

  Args:
    params: the parameters the statistics were taken with (their means are the centres).
    stats: ``SuffStats`` from ``e_step`` (possibly summed over several).
    reg_covar: :math:`\epsilon`, added to the diagonal of every covariance.

  Returns:
    The updated ``GMMParams``.
  """
  cov_type = params.covariance_type
  counts = stats.counts + 10 * jnp.finfo(stats.counts.dtype).eps
  delta = stats.sum_x / counts[:, None]
  means = params.means + delta
  weights = counts / jnp.sum(counts)
  eye = jnp.eye(means.shape[-1], dtype=means.dtype)
  if cov_type == "full":
    cov = stats.sum_xx / counts[:, None, None] - jnp.einsum("kd,ke->kde", delta, delta)
    cov = _repair_positive_definite(0.5 * (cov + jnp.swapaxes(cov, -1, -2)) + reg_covar * eye)
  elif cov_type == "tied":
    cov = (stats.sum_xx - jnp.einsum("k,kd,ke->de", counts, delta, delta)) / jnp.sum(counts)
    cov = _repair_positive_definite(0.5 * (cov + cov.T) + reg_covar * eye)
  else:
    cov = jnp.maximum(stats.sum_xx / counts[:, None] - jnp.square(delta), 0.0) + reg_covar
    if cov_type == "spherical":
      cov = jnp.mean(cov, axis=-1)
  return GMMParams(weights, means, cov, cov_type)


def em_step(params: GMMParams, x: ArrayLike, sample_weight: ArrayLike | None = None, *,
            reg_covar: float = 1e-6, chunk_size: int | None = None,
            mesh: jax.sharding.Mesh | None = None,
            axis_name: str | None = None) -> tuple[GMMParams, jax.Array]:
  """One EM iteration: ``m_step(params, e_step(params, x))`` (``mesh``: see ``e_step``).

  Returns:
    (new params, mean log-likelihood of the *old* params on x, weighted by sample_weight).
  """
  stats = e_step(params, x, sample_weight, chunk_size=chunk_size, mesh=mesh, axis_name=axis_name)
  return m_step(params, stats, reg_covar), stats.log_likelihood / stats.total_weight


# --------------------------------------------------------------------------------------------
# Initialisation.


def params_from_responsibilities(x_chunks, w_chunks, resp_fn, num_components, covariance_type,
                                 reg_covar, *, shard=None) -> GMMParams:
  """M-step from given responsibilities ``resp_fn(chunk_index, x_chunk) -> (n, K)``.

  Two passes over the chunks: the means, then the moments about them. Mirrors scikit-learn's
  ``_initialize`` except that the weights are normalised to sum to one. With ``shard`` (a
  ``lvmjax.kmeans.sharded.Shard``, inside ``shard_map``) the chunks are this device's and the
  sums are added over devices; ``chunk_index`` is then global.
  """
  k, d = num_components, x_chunks.shape[-1]
  dtype = x_chunks.dtype
  fn = lambda i, xc, _: (resp_fn(i, xc), jnp.zeros(xc.shape[0], dtype))  # pylint: disable=unnecessary-lambda-assignment
  origin = GMMParams(jnp.full((k,), 1.0 / k, dtype), jnp.zeros((k, d), dtype), None, "diag")
  means = m_step(origin, _scan(x_chunks, w_chunks, origin.means, "diag", fn, shard),
                 reg_covar).means
  centered = GMMParams(None, means, None, covariance_type)
  return m_step(centered, _scan(x_chunks, w_chunks, means, covariance_type, fn, shard), reg_covar)


def _initialize(key, x, w, x_chunks, w_chunks, num_components, covariance_type, init, reg_covar,
                shard=None):
  if shard is not None:
    return _initialize_sharded(key, x_chunks, w_chunks, num_components, covariance_type, init,
                               reg_covar, shard)
  chunk = x_chunks.shape[1]
  if init == "kmeans":
    from lvmjax import kmeans  # pylint: disable=g-import-not-at-top
    labels = kmeans.fit(key, x, num_components, n_init=1, sample_weight=w).labels
    labels = jnp.pad(labels, (0, x_chunks.shape[0] * chunk - x.shape[0])).reshape(-1, chunk)

    def resp_fn(i, _):
      return jax.nn.one_hot(labels[i], num_components, dtype=x.dtype)
  elif init == "random":
    def resp_fn(i, xc):
      r = jax.random.uniform(jax.random.fold_in(key, i), (xc.shape[0], num_components), x.dtype)
      return r / jnp.sum(r, axis=1, keepdims=True)
  else:
    if init == "random_from_data":
      p = w / jnp.sum(w)
      idx = jax.random.choice(key, x.shape[0], (num_components,), replace=False, p=p)
    else:  # k-means++
      from lvmjax import kmeans  # pylint: disable=g-import-not-at-top
      _, idx = kmeans.kmeans_plusplus(key, x, num_components, sample_weight=w)

    def resp_fn(i, xc):
      rows = i * chunk + jnp.arange(xc.shape[0])
      return (rows[:, None] == idx[None, :]).astype(x.dtype)
  return params_from_responsibilities(x_chunks, w_chunks, resp_fn, num_components,
                                      covariance_type, reg_covar)


def _initialize_sharded(key, x_chunks, w_chunks, num_components, covariance_type, init, reg_covar,
                        shard):
  """``_initialize`` on this device's chunks inside ``shard_map``: the same draws and the same
  responsibilities as on one device (global chunk indices and row ids)."""
  from lvmjax.kmeans import kmeans as km  # pylint: disable=g-import-not-at-top
  from lvmjax.kmeans import sharded as ksh  # pylint: disable=g-import-not-at-top
  num_chunks, chunk, d = x_chunks.shape
  dtype = x_chunks.dtype
  x = x_chunks.reshape(-1, d)
  w = w_chunks.reshape(-1)
  rows, valid = sharding.local_rows(shard.axis_name, shard.layout, x.shape[0])
  first = _first_chunk(shard, num_chunks)
  if init == "kmeans":
    labels = ksh.fit_local(key, x, w, valid, None, jnp.asarray(1e-4, dtype), shard,
                           num_clusters=num_components, init_kind="k-means++", n_init=1,
                           max_iter=300, chunk_size=km._auto_chunk_size(num_components)  # pylint: disable=protected-access
                           ).labels.reshape(num_chunks, chunk)

    def resp_fn(i, _):
      return jax.nn.one_hot(labels[i - first], num_components, dtype=dtype)
  elif init == "random":
    def resp_fn(i, xc):
      r = jax.random.uniform(jax.random.fold_in(key, i), (xc.shape[0], num_components), dtype)
      return r / jnp.sum(r, axis=1, keepdims=True)
  else:
    if init == "random_from_data":
      wg = sharding.gather_rows(w, shard.axis_name, shard.layout)
      idx = jax.random.choice(key, wg.shape[0], (num_components,), replace=False,
                              p=wg / jnp.sum(wg))
    else:  # k-means++
      _, idx = ksh.kmeans_plusplus_local(key, x, w, valid, num_components, shard)
    rows = rows.reshape(num_chunks, chunk)

    def resp_fn(i, _):
      return (rows[i - first][:, None] == idx[None, :]).astype(dtype)
  return params_from_responsibilities(x_chunks, w_chunks, resp_fn, num_components,
                                      covariance_type, reg_covar, shard=shard)


# --------------------------------------------------------------------------------------------
# The fit loop.


class _LoopState(NamedTuple):
  params: GMMParams
  lower_bound: jax.Array
  history: jax.Array
  n_iter: jax.Array
  converged: jax.Array


def _em_loop(params, x_chunks, w_chunks, max_iter, tol, reg_covar, shard=None):
  dtype = x_chunks.dtype

  def cond(s):
    return (s.n_iter < max_iter) & ~s.converged

  def body(s):
    stats = _em_stats(x_chunks, w_chunks, s.params, shard)
    ll = stats.log_likelihood / stats.total_weight
    new_params = m_step(s.params, stats, reg_covar)
    converged = jnp.abs(ll - s.lower_bound) < tol
    history = s.history.at[s.n_iter].set(ll) if max_iter else s.history
    return _LoopState(new_params, ll, history, s.n_iter + 1, converged)

  state = _LoopState(params, jnp.array(-jnp.inf, dtype), jnp.full((max_iter,), jnp.nan, dtype),
                     jnp.array(0, jnp.int32), jnp.array(False))
  return jax.lax.while_loop(cond, body, state)


def _fit_body(key, x, w, init_params, tol, reg_covar, *, num_components, covariance_type, init,
              n_init, max_iter, chunk_size, shard=None):
  """The whole fit; with ``shard``, the body run on each device inside ``shard_map``, where x
  and w are this device's block of rows."""
  if shard is None:
    # Raw moments are accurate near the origin: fit on centred data, shift the means back.
    center = (w @ x) / jnp.sum(w)
    x = x - center
    x_chunks, w_chunks = _chunks(x, w, chunk_size)
  else:
    _, valid = sharding.local_rows(shard.axis_name, shard.layout, x.shape[0])
    w = jnp.where(valid, w, 0)
    center = jax.lax.psum(w @ x, shard.axis_name) / jax.lax.psum(jnp.sum(w), shard.axis_name)
    x = jnp.where(valid[:, None], x - center, 0)
    x_chunks, w_chunks = _chunks(x, w, chunk_size)

  def one(k):
    if init == "params":
      params = init_params.replace(means=init_params.means - center)
    else:
      params = _initialize(k, x, w, x_chunks, w_chunks, num_components, covariance_type, init,
                           reg_covar, shard)
    s = _em_loop(params, x_chunks, w_chunks, max_iter, tol, reg_covar, shard)
    params = s.params.replace(means=s.params.means + center)
    return GMMFitResult(params, s.history, s.n_iter, s.converged, s.lower_bound)

  if n_init == 1:
    return one(key)
  results = jax.vmap(one)(jax.random.split(key, n_init))
  score = jnp.where(jnp.isnan(results.lower_bound), -jnp.inf, results.lower_bound)
  best = jnp.argmax(score)
  return jax.tree.map(lambda a: a[best], results)


_STATIC = ("num_components", "covariance_type", "init", "n_init", "max_iter", "chunk_size")
_fit_jit = jax.jit(_fit_body, static_argnames=_STATIC + ("shard",))


@functools.partial(jax.jit, static_argnames=_STATIC + ("mesh", "shard"))
def _fit_sharded_jit(key, x, w, init_params, tol, reg_covar, *, mesh, shard, **static):
  spec = P(shard.axis_name)
  body = functools.partial(_fit_body, shard=shard, **static)
  return jax.shard_map(body, mesh=mesh, in_specs=(P(), spec, spec, P(), P(), P()),
                       out_specs=P(), check_vma=False)(key, x, w, init_params, tol, reg_covar)


def check_fit_options(num_components, covariance_type, n_init, max_iter, tol, reg_covar):
  """The checks every EM fit makes of its options (``fit``, ``streaming.fit``); ValueError if bad.

  Returns:
    ``(num_components, n_init, max_iter, tol, reg_covar)`` as checked.
  """
  num_components = _checks.check_positive_int(num_components, "num_components")
  _checks.check_choice(covariance_type, "covariance_type", model.COVARIANCE_TYPES)
  n_init = _checks.check_positive_int(n_init, "n_init")
  max_iter = _checks.check_positive_int(max_iter, "max_iter", minimum=0)
  tol = _checks.check_nonnegative(tol, "tol")
  reg_covar = _checks.check_nonnegative(reg_covar, "reg_covar")
  return num_components, n_init, max_iter, tol, reg_covar


def _check_x(x):
  """``check_data``; for a global multi-host array, its shape and this process's values."""
  if sharding.is_global(x):
    _checks.check_data(_ShapeOnly(x.shape))
    sharding.check_local_values(x)
  else:
    _checks.check_data(x)


def _check_weight(sample_weight, n):
  if sharding.is_global(sample_weight):
    if np.shape(sample_weight) != (n,):
      raise ValueError(f"sample_weight must have shape ({n},), one weight per row of x; got "
                       f"{np.shape(sample_weight)}.")
    sharding.check_local_values(sample_weight, "sample_weight")
  else:
    _checks.check_sample_weight(sample_weight, n)


class _ShapeOnly:
  """Stands in for a global array in the shape checks (its values live on other processes)."""

  def __init__(self, shape):
    self.shape = tuple(shape)

  def __array__(self, dtype=None, copy=None):
    return np.zeros((1,) * len(self.shape), dtype or np.float32)


def _place(x, sample_weight, dtype, chunk, mesh, axis_name):
  """Puts x and the weights on the mesh; returns (x, w, shard, chunk) for ``_fit_sharded_jit``.

  See :func:`lvmjax.sharding.place_rows`; blocks are a multiple of the (clamped) chunk size.
  """
  from lvmjax.kmeans import sharded as ksh  # pylint: disable=g-import-not-at-top
  chunk = min(chunk, -(-x.shape[0] // sharding.num_shards(mesh, axis_name)))
  x, w, layout = sharding.place_rows(x, sample_weight, dtype, mesh, axis_name, multiple=chunk)
  return x, w, ksh.Shard(axis_name, layout), int(chunk)


def fit(key: jax.Array, x: ArrayLike, num_components: int, covariance_type: str = "full",
        init: str | GMMParams = "kmeans", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
        reg_covar: float = 1e-6, sample_weight: ArrayLike | None = None, *,
        chunk_size: int | None = None, mesh: jax.sharding.Mesh | None = None,
        axis_name: str | None = None) -> GMMFitResult:
  r"""Fits a Gaussian mixture by EM, on the device, in one compiled call.

  Each iteration runs ``e_step`` (streamed over chunks of rows) and ``m_step``; the loop is a
  ``lax.while_loop``. ``n_init`` restarts run as one ``vmap`` over keys and the restart with the
  largest final mean log-likelihood wins. Compiles once per shape and static configuration.

  The meaning of ``tol``, ``max_iter`` and ``reg_covar`` is scikit-learn's ``GaussianMixture``:
  iteration i records the mean log-likelihood of the parameters it starts from, and the loop stops
  when that changes by less than ``tol`` (absolute) or after ``max_iter`` iterations.

  Args:
    key: PRNG key for the initialisation.
    x: (N, D) data; float32 unless it is float64 with x64 enabled.
    num_components: K.
    covariance_type: "full", "tied", "diag" or "spherical".
    init: "kmeans" (K-means labels as responsibilities, scikit-learn's default), "k-means++"
      (hard responsibilities at k-means++ seeds), "random" (uniform random responsibilities),
      "random_from_data" (hard responsibilities at K distinct random points) or a ``GMMParams`` to
      start from. Built-in initialisations normalise the weights to sum to one.
    n_init: number of restarts (ignored, as one, when ``init`` is a GMMParams).
    max_iter: maximum number of EM iterations (0 returns the initial parameters).
    tol: convergence threshold on the change in mean log-likelihood.
    reg_covar: non-negative value added to the diagonal of the covariances.
    sample_weight: optional (N,) non-negative weights; integer weights equal repeating rows.
      Rows of weight 0 (e.g. padding of ragged data sets under ``jax.vmap``) change no EM
      statistic; only ``init="kmeans"`` still sees them, since K-means' tolerance uses the
      unweighted variance of all rows (as scikit-learn's does). For fits equal to those of the
      unpadded data, use another init.
    chunk_size: rows per E-step chunk (memory O(chunk_size · K · D)).
    mesh: a ``jax.sharding.Mesh`` to split the rows of x over, along ``axis_name``: each device
      computes the statistics of its rows and one ``psum`` per iteration adds them (the whole
      fit, initialisation included, is one ``shard_map``). The result equals the one-device fit
      up to float rounding; x is padded internally (the padding is not data). A ``jax.Array``
      whose rows are already split by a ``NamedSharding`` (e.g. from
      ``lvmjax.sharding.shard_rows`` or, over several hosts, ``rows_from_processes``) is fitted
      this way without ``mesh``; all its rows are data, so give padding rows weight 0. With
      ``init="random"`` the responsibilities drawn depend on the chunking: pass the same
      ``chunk_size`` (dividing the rows per device) to reproduce a one-device fit exactly.
    axis_name: the mesh axis of the rows (default "data", else the mesh's first axis).

  Returns:
    ``GMMFitResult(params, log_likelihood, n_iter, converged, lower_bound)``.

  Raises:
    ValueError: on bad input (see the message), or when the fit produced non-finite parameters
      (ill-defined covariances: increase ``reg_covar`` or reduce ``num_components``).

  Examples:
    >>> import jax
    >>> from lvmjax import gmm
    >>> x, _ = gmm.sample(jax.random.key(0), gmm.GMMParams(
    ...     jax.numpy.array([.5, .5]), jax.numpy.array([[-3., 0.], [3., 0.]]),
    ...     jax.numpy.array([1., 1.]), "spherical"), 500)
    >>> result = gmm.fit(jax.random.key(1), x, 2)
    >>> bool(result.converged)
    True
  """
  placement = sharding.mesh_of(x, mesh, axis_name)
  _check_x(x)
  n, d = np.shape(x)
  num_components, n_init, max_iter, tol, reg_covar = check_fit_options(
      num_components, covariance_type, n_init, max_iter, tol, reg_covar)
  if n < num_components:
    raise ValueError(
        f"x has {n} points but num_components={num_components}: a mixture needs at least as many "
        "points as components. Use fewer components or more data.")
  _check_weight(sample_weight, n)
  if placement is None:
    x, w = _prepare(x, sample_weight)
    dtype = x.dtype
  else:
    dtype = jnp.result_type(x.dtype, float)
    w = sample_weight
  if isinstance(init, GMMParams):
    model.check_init(init, d, num_components, covariance_type)
    init_params = jax.tree.map(lambda a: jnp.asarray(a, dtype), init)
    init_kind, n_init = "params", 1
  else:
    if not isinstance(init, str) or init not in INITS:
      raise ValueError(f"Unknown init {init!r}; expected one of {', '.join(map(repr, INITS))} "
                       "or a gmm.GMMParams.")
    init_params, init_kind = None, init
  if (w is not None and _checks.is_concrete(w) and not sharding.is_global(w)
      and int(np.count_nonzero(np.asarray(w))) < num_components
      and init_kind in ("random_from_data", "k-means++", "kmeans")):
    raise ValueError(f"Only {int(np.count_nonzero(np.asarray(w)))} points have positive "
                     f"sample_weight, fewer than num_components={num_components}.")
  chunk = _checks.check_positive_int(chunk_size, "chunk_size") if chunk_size else (
      default_chunk_size(n, num_components, d))
  static = dict(num_components=num_components, covariance_type=covariance_type, init=init_kind,
                n_init=n_init, max_iter=max_iter)
  if placement is None:
    result = _fit_jit(key, x, w, init_params, jnp.asarray(tol, dtype),
                      jnp.asarray(reg_covar, dtype), chunk_size=min(chunk, n), **static)
  else:
    x, w, shard, chunk = _place(x, sample_weight, dtype, chunk, *placement)
    if init_params is not None:  # via the host: its leaves may be committed to one device
      init_params = jax.tree.map(lambda a: np.asarray(jax.device_get(a)), init_params)
    result = _fit_sharded_jit(key, x, w, init_params, jnp.asarray(tol, dtype),
                              jnp.asarray(reg_covar, dtype), chunk_size=chunk,
                              mesh=placement[0], shard=shard, **static)
  if _checks.is_concrete(result.n_iter):
    leaves = jax.tree.leaves(result.params)
    if not all(bool(jnp.all(jnp.isfinite(a))) for a in leaves):
      raise ValueError(
          "Fitting the mixture model failed because some components have ill-defined empirical "
          "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
          "the number of components, or increase reg_covar.")
    result = result._replace(log_likelihood=result.log_likelihood[:int(result.n_iter)])
  return result
