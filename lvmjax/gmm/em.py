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

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import kmeans
from lvmjax import linalg
from lvmjax import mixture
from lvmjax import sharding
from lvmjax.gmm import missing as missing_data
from lvmjax.gmm import model
from lvmjax.gmm.model import GMMParams
from lvmjax.types import DataLike, Key, Scalar, WeightsLike

INITS = ("kmeans", "k-means++", "random", "random_from_data")

#: The parameter fields ``fit(..., fixed=...)`` can hold at their initial values.
FIXABLE = ("weights", "means", "covariances")


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
  whitened path of :class:`GaussianFamily`)."""
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


def zero_stats(num_components: int, num_features: int, covariance_type: str,
               dtype: Any) -> SuffStats:
  """All-zero ``SuffStats`` of K components in D dimensions (the start of a sum)."""
  xx = model.covariance_shape(covariance_type, num_components, num_features)
  if covariance_type == "spherical":
    xx = (num_components, num_features)
  z = lambda shape: jnp.zeros(shape, dtype)  # pylint: disable=unnecessary-lambda-assignment
  return SuffStats(z((num_components,)), z((num_components, num_features)), z(xx), z(()), z(()))


def _scan(x_chunks, w_chunks, centers, covariance_type, resp_fn, shard=None):
  """Sums chunk statistics about ``centers`` (K, D) of given responsibilities with lax.scan.

  ``resp_fn(i, x) -> (n, K)``, ``i`` the local chunk index; with ``shard`` (inside
  ``shard_map``) the sums are added over the devices with ``psum``.
  """
  k, d = centers.shape
  dtype = x_chunks.dtype

  def body(acc, inputs):
    i, xc, wc = inputs
    diff = xc[None, :, :] - centers[:, None, :]
    stats = _chunk_stats(diff, wc[:, None] * resp_fn(i, xc), jnp.zeros(xc.shape[0], dtype), wc,
                         covariance_type)
    return jax.tree.map(jnp.add, acc, stats), None

  init = zero_stats(k, d, covariance_type, dtype)
  out, _ = jax.lax.scan(body, init, (jnp.arange(x_chunks.shape[0]), x_chunks, w_chunks))
  return sharding.psum(out, shard)


class _Whitened(NamedTuple):
  """What the whitened E-step computes once per iteration ("full" and "tied")."""
  chol: jax.Array     # (K, D, D) or (D, D)
  w_t: jax.Array      # (K·D, D) stacked L_k^{-1}; (K·D, D+1) with -L_k^{-1} mu_k appended for
                      # "full" with D > SMALL_D (the GEMM subtracts the means); (D, D) "tied"
  b: jax.Array        # (K, D) L_k^{-1} mu_k
  offset: jax.Array   # (K,) log w_k - D/2 log 2pi - log det L_k


class _Diagonal(NamedTuple):
  """What the "diag"/"spherical" E-step computes once per iteration."""
  means: jax.Array
  log_joint_rows: Any


@struct.dataclass
class GaussianFamily(mixture.MixtureFamily):
  r"""The Gaussian mixture as a :class:`lvmjax.mixture.MixtureFamily`: what ``gmm.fit`` runs.

  Its E-step is specialised (:class:`SuffStats`, moments about the current means). "full" and
  "tied" take the whitened path: per chunk, one matrix product gives
  :math:`y_{nk} = L_k^{-1}(x_n - \mu_k)` for all components at once, laid out (K, D, n); the
  log-joint needs :math:`\lVert y_{nk} \rVert^2`, and the same array gives the moments
  :math:`\sum_n r_{nk} y_{nk}` and :math:`\sum_n r_{nk} y_{nk} y_{nk}^\top` (K batched
  (D, n)(n, D) products), so the differences :math:`x_n - \mu_k` are never formed a second
  time. ``finalize`` maps the sums back once, after the last chunk:
  :math:`S^{(1)}_k = L_k \sum r y`, :math:`S^{(2)}_k = L_k (\sum r y y^\top) L_k^\top` (linear,
  so the sums still add over chunks, devices and batches). "diag" and "spherical" use the
  differences directly.

  Attributes:
    covariance_type: "full", "tied", "diag" or "spherical" (static).
    reg_covar: added to the diagonal of every covariance in the M-step (traced).
    num_active: None, or an int32 scalar k (traced): only the first k components are fitted;
      the others keep weight 0 and their parameters (:func:`fit`'s ``num_active``).
  """
  covariance_type: str = struct.field(pytree_node=False, default="full")
  reg_covar: Any = 1e-6
  num_active: Any = None

  def log_component(self, params: GMMParams, x: jax.Array) -> jax.Array:
    """(n, K) :math:`\\log \\mathcal{N}(x_n; \\mu_k, \\Sigma_k)`."""
    return model.log_joint(params, x) - jnp.log(params.weights)[None, :]

  def m_step(self, params: GMMParams, stats: SuffStats) -> GMMParams:
    """:func:`lvmjax.gmm.m_step` with this family's ``reg_covar`` (components past
    ``num_active`` parked)."""
    return park_inactive(m_step(params, stats, self.reg_covar), params, self.num_active)

  def m_step_fixed(self, params: GMMParams, stats: SuffStats,
                   fixed: tuple[str, ...]) -> GMMParams:
    r"""The M-step with the fields in ``fixed`` held: with fixed means the covariances are the
    moments about them, :math:`\Sigma_k = S^{(2)}_k / N_k + \epsilon I` (the moments are taken
    about the E-step's means, so :math:`S^{(1)}` is dropped); the other updates do not depend on
    each other."""
    if "means" in fixed:
      stats = stats._replace(sum_x=jnp.zeros_like(stats.sum_x))
    new = park_inactive(m_step(params, stats, self.reg_covar), params, self.num_active)
    return mixture.keep_fields(new, params, fixed)

  def prepare(self, params: GMMParams) -> Any:
    cov_type = params.covariance_type
    k, d = params.means.shape
    if cov_type not in ("full", "tied"):
      return _Diagonal(params.means, _log_joint_fn(params))
    dtype = params.means.dtype
    chol = model.cholesky(params)  # (K, D, D) full, (D, D) tied
    eye = jnp.broadcast_to(jnp.eye(d, dtype=dtype), chol.shape)
    chol_inv = linalg.triangular_solve(chol, eye, left_side=True, lower=True)
    offset = (jnp.log(params.weights) - 0.5 * d * math.log(2 * math.pi)
              - linalg.sum_small(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1))))
    if cov_type == "full":
      w_t = chol_inv.reshape(k * d, d)  # row block k: L_k^{-1}
      b = linalg.matmul(chol_inv, params.means[:, :, None])[:, :, 0]
      if d > linalg.SMALL_D:
        # The product with [x; 1] gives y = L^{-1} x - b directly: no (K, D, n) pass to
        # subtract b (-14% time per EM iteration at D=16, K=32 on 2 CPU devices). Small D stays
        # elementwise (a contraction over D + 1 > SMALL_D terms would become a dot call).
        w_t = jnp.concatenate([w_t, -b.reshape(k * d, 1)], axis=1)
    else:
      w_t = chol_inv
      b = linalg.matmul(params.means, chol_inv.T)
    return _Whitened(chol, w_t, b, offset)

  def chunk_stats(self, prepared: Any, x: jax.Array, w: jax.Array) -> SuffStats:
    if isinstance(prepared, _Diagonal):
      diff = x[None, :, :] - prepared.means[:, None, :]
      lj = prepared.log_joint_rows(x, diff)
      log_px = jax.nn.logsumexp(lj, axis=-1)
      resp = jnp.exp(lj - log_px[:, None])
      return _chunk_stats(diff, w[:, None] * resp, log_px, w, self.covariance_type)
    d = x.shape[-1]
    n = x.shape[0]
    if prepared.w_t.shape[-1] > d:  # -b folded into the product: [x; 1]
      xa = jnp.concatenate([x.T, jnp.ones((1, n), x.dtype)], axis=0)
      y = linalg.matmul(prepared.w_t, xa).reshape(-1, d, n)  # (K, D, n)
    else:
      y = linalg.matmul(prepared.w_t, x.T).reshape(-1, d, n) - prepared.b[:, :, None]
    log_joint = prepared.offset[:, None] - 0.5 * linalg.sum_small(y * y, axis=1)  # (K, n)
    log_px = linalg.logsumexp_small(log_joint, axis=0)
    wr = jnp.exp(log_joint - log_px[None, :]) * w[None, :]
    yw = y * wr[:, None, :]
    if self.covariance_type == "full" and d <= linalg.SMALL_D:
      # Small D: every row's terms (r, r y, r y y^T upper triangle) stacked into one (K, T, n)
      # array that is materialised and summed over the rows by one reduction: a batched dot of
      # (D, n)(n, D) matrices costs a library call per component (per fit under vmap), and
      # XLA:CPU's reductions are slow on fused broadcasts.
      pairs = [(i, j) for i in range(d) for j in range(i, d)]
      terms = jnp.stack([wr] + [yw[:, i] for i in range(d)]
                        + [yw[:, i] * y[:, j] for i, j in pairs], axis=1)
      sums = jnp.sum(jax.lax.optimization_barrier(terms), axis=-1)  # (K, T)
      upper = {pair: sums[:, 1 + d + t] for t, pair in enumerate(pairs)}
      gram = jnp.stack([jnp.stack([upper[min(i, j), max(i, j)] for j in range(d)], -1)
                        for i in range(d)], -2)
      return SuffStats(sums[:, 0], sums[:, 1:1 + d], gram, jnp.sum(w * log_px), jnp.sum(w))
    if self.covariance_type == "full":
      gram = yw @ jnp.swapaxes(y, 1, 2)
    else:
      gram = jnp.einsum("kdn,ken->de", yw, y)
    return SuffStats(jnp.sum(wr, axis=1), jnp.sum(yw, axis=2), gram, jnp.sum(w * log_px),
                     jnp.sum(w))

  def finalize(self, prepared: Any, stats: SuffStats) -> SuffStats:
    if isinstance(prepared, _Diagonal):
      return stats
    chol = prepared.chol
    if self.covariance_type == "full":
      sum_x = linalg.matmul(chol, stats.sum_x[:, :, None])[:, :, 0]
      sum_xx = linalg.matmul(linalg.matmul(chol, stats.sum_xx), jnp.swapaxes(chol, -1, -2))
    else:
      sum_x = linalg.matmul(stats.sum_x, chol.T)
      sum_xx = linalg.matmul(linalg.matmul(chol, stats.sum_xx), chol.T)
    return stats._replace(sum_x=sum_x, sum_xx=sum_xx)

  def initialize(self, key: jax.Array, rows: mixture.Rows, num_components: int, init: str,
                 shard: sharding.Shard | None = None) -> GMMParams:
    return _initialize(key, rows, num_components, self.covariance_type, init, self.reg_covar,
                       shard, self.num_active)

  def data_shift(self, x: jax.Array, w: jax.Array, shard: sharding.Shard | None = None):
    # Raw moments are accurate near the origin: fit on centred data, shift the means back.
    return sharding.psum(w @ x, shard) / sharding.psum(jnp.sum(w), shard)

  def shift_params(self, params: GMMParams, shift: jax.Array) -> GMMParams:
    return params.replace(means=params.means + shift)


@struct.dataclass
class MissingGaussianFamily(GaussianFamily):
  r"""The Gaussian mixture on data whose NaN entries are missing: the E-step of
  :func:`lvmjax.gmm.missing.expected_stats` (Ghahramani & Jordan 1994), which takes the
  conditional moments of the missing entries; the M-step, frozen parameters and parameter shift
  are :class:`GaussianFamily`'s. It centres the data by each column's observed mean, and its
  named initialisations run on the data with the missing entries set to that mean.

  Attributes:
    covariance_type: "full", "tied", "diag" or "spherical" (static).
    reg_covar: added to the diagonal of every covariance in the M-step (traced).
  """
  missing_values = True

  def log_component(self, params: GMMParams, x: jax.Array) -> jax.Array:
    r"""(n, K) :math:`\log \mathcal{N}(x_{n,o}; \mu_{k,o}, \Sigma_{k,oo})`, NaN = missing."""
    return model.log_joint(params, missing_data.fill_missing(x), ~jnp.isnan(x)) - jnp.log(
        params.weights)[None, :]

  def prepare(self, params: GMMParams) -> GMMParams:
    return params

  def chunk_stats(self, prepared: GMMParams, x: jax.Array, w: jax.Array) -> SuffStats:
    return SuffStats(*missing_data.expected_stats(prepared, x, w))

  def finalize(self, prepared: Any, stats: SuffStats) -> SuffStats:
    del prepared
    return stats

  def data_shift(self, x: jax.Array, w: jax.Array, shard: sharding.Shard | None = None):
    return missing_data.observed_mean(x, w, shard)

  def initialize(self, key: jax.Array, rows: mixture.Rows, num_components: int, init: str,
                 shard: sharding.Shard | None = None) -> GMMParams:
    filled = mixture.Rows(missing_data.fill_missing(rows.x), rows.w,
                          missing_data.fill_missing(rows.x_chunks), rows.w_chunks)
    return super().initialize(key, filled, num_components, init, shard)


def default_chunk_size(num_points: int, num_components: int, num_features: int) -> int:
  """Rows per chunk: about 2**19 floats of (K, D, chunk) intermediates, at least 64 rows
  (:func:`lvmjax.mixture.default_chunk_size`)."""
  return mixture.default_chunk_size(num_points, num_components, num_features)


def e_step(params: GMMParams, x: DataLike, sample_weight: WeightsLike | None = None, *,
           chunk_size: int | None = None, mesh: jax.sharding.Mesh | None = None,
           axis_name: str | None = None) -> SuffStats:
  r"""E-step: responsibilities and their additive statistics, streamed over chunks of rows.

  .. math::

    r_{nk} = \frac{w_k \mathcal{N}(x_n; \mu_k, \Sigma_k)}{\sum_j w_j \mathcal{N}(x_n; \mu_j, \Sigma_j)}

  :func:`lvmjax.mixture.e_step` of :class:`GaussianFamily`.

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
  sharding.check_data(x)
  model.check_params(params, np.shape(x)[1], check_values=False)
  sharding.check_sample_weight(sample_weight, np.shape(x)[0])
  return mixture.e_step(GaussianFamily(params.covariance_type), params, x, sample_weight,
                        chunk_size=chunk_size, mesh=mesh, axis_name=axis_name,
                        dtype=params.means.dtype)


def _active(num_components: int, num_active: Any) -> jax.Array:
  """(K,) bool: True for the first ``num_active`` components."""
  return jnp.arange(num_components) < num_active


def park_inactive(new: GMMParams, old: GMMParams, num_active: Any) -> GMMParams:
  """``new`` with components ``num_active``.. parked: weight exactly 0 (the others renormalised)
  and the means and covariances of ``old``; ``new`` itself when ``num_active`` is None.

  A component of weight 0 has log-weight -inf, so it takes no responsibility and gathers no
  statistic: EM never revives it, and the first ``num_active`` components are fitted as a mixture
  of their own.
  """
  if num_active is None:
    return new
  k = new.weights.shape[0]
  active = _active(k, num_active)
  weights = jnp.where(active, new.weights, 0)
  weights = weights / jnp.sum(weights)
  means = jnp.where(active[:, None], new.means, old.means)
  cov = new.covariances
  if new.covariance_type != "tied":
    cov = jnp.where(active.reshape((k,) + (1,) * (cov.ndim - 1)), cov, old.covariances)
  return GMMParams(weights, means, cov, new.covariance_type)


# Given parameters parked at fit's door: one small program, not one per array operation.
_park_given = jax.jit(lambda params, num_active: park_inactive(params, params, num_active))


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


def em_step(params: GMMParams, x: DataLike, sample_weight: WeightsLike | None = None, *,
            reg_covar: float = 1e-6, chunk_size: int | None = None,
            mesh: jax.sharding.Mesh | None = None,
            axis_name: str | None = None) -> tuple[GMMParams, Scalar]:
  """One EM iteration: ``m_step(params, e_step(params, x))`` (``mesh``: see ``e_step``).

  Returns:
    (new params, mean log-likelihood of the *old* params on x, weighted by sample_weight).
  """
  stats = e_step(params, x, sample_weight, chunk_size=chunk_size, mesh=mesh, axis_name=axis_name)
  return m_step(params, stats, reg_covar), mixture.mean_log_likelihood(stats)


# --------------------------------------------------------------------------------------------
# Initialisation.


def params_from_responsibilities(x_chunks: jax.Array, w_chunks: jax.Array, resp_fn: Any,
                                 num_components: int, covariance_type: str, reg_covar: Any, *,
                                 shard: sharding.Shard | None = None) -> GMMParams:
  """M-step from given responsibilities ``resp_fn(chunk_index, x_chunk) -> (n, K)``.

  Two passes over the chunks: the means, then the moments about them. Mirrors scikit-learn's
  ``_initialize`` except that the weights are normalised to sum to one. With ``shard`` (a
  ``lvmjax.sharding.Shard``, inside ``shard_map``) the chunks are this device's and the sums are
  added over devices; ``chunk_index`` is the local chunk index.

  Args:
    x_chunks: (C, n, D) rows in chunks.
    w_chunks: (C, n) their weights.
    resp_fn: the responsibilities of a chunk.
    num_components: K.
    covariance_type: of the parameters to return.
    reg_covar: added to the covariances' diagonal.
    shard: the reduction hook.

  Returns:
    ``GMMParams``.
  """
  k, d = num_components, x_chunks.shape[-1]
  dtype = x_chunks.dtype
  origin = GMMParams(jnp.full((k,), 1.0 / k, dtype), jnp.zeros((k, d), dtype), None, "diag")
  means = m_step(origin, _scan(x_chunks, w_chunks, origin.means, "diag", resp_fn, shard),
                 reg_covar).means
  centered = GMMParams(None, means, None, covariance_type)
  return m_step(centered, _scan(x_chunks, w_chunks, means, covariance_type, resp_fn, shard),
                reg_covar)


def _initialize(key, rows: mixture.Rows, num_components, covariance_type, init, reg_covar,
                shard=None, num_active=None) -> GMMParams:
  """The GMM's initialisations, on one device (``shard=None``) or on this device's rows inside
  ``shard_map``: the same draws and the same responsibilities either way (global chunk indices
  and row ids). With ``num_active``, the initialisation of that many components (K-means and
  k-means++ of ``num_active`` clusters, responsibilities on the first ``num_active`` columns),
  the others parked at mean 0 (before the data shift) and unit covariance."""
  x_chunks, w_chunks = rows.x_chunks, rows.w_chunks
  num_chunks, chunk, _ = x_chunks.shape
  dtype = x_chunks.dtype
  if init in mixture.INITS:  # "random", "random_from_data"
    resp_fn = mixture.initial_responsibilities(key, rows, num_components, init, shard)
  else:
    # K-means labels ("kmeans") or k-means++ seeds ("k-means++") as hard responsibilities; on a
    # mesh, kmeans' own collective code path (the same reduction hook ``shard``).
    valid = None if shard is None else sharding.local_rows(shard.axis_name, shard.layout,
                                                           rows.x.shape[0])[1]
    if init == "kmeans":
      labels = kmeans.fit_local(key, rows.x, rows.w, valid, None, jnp.asarray(1e-4, dtype), shard,
                                num_clusters=num_components, init_kind="k-means++", n_init=1,
                                max_iter=300,
                                chunk_size=kmeans.default_chunk_size(num_components),
                                num_active=num_active).labels
      labels = jnp.pad(labels, (0, num_chunks * chunk - rows.x.shape[0]))
      labels = labels.reshape(num_chunks, chunk)

      def resp_fn(i, _):
        return jax.nn.one_hot(labels[i], num_components, dtype=dtype)
    else:
      _, idx = kmeans.kmeans_plusplus(key, rows.x, num_components, rows.w, valid=valid,
                                      shard=shard, num_active=num_active)
      ids = mixture.row_ids(num_chunks, chunk, shard)

      def resp_fn(i, _):
        return (ids[i][:, None] == idx[None, :]).astype(dtype)
  if num_active is None:
    return params_from_responsibilities(x_chunks, w_chunks, resp_fn, num_components,
                                         covariance_type, reg_covar, shard=shard)
  active = _active(num_components, num_active).astype(dtype)

  def active_resp_fn(i, xc):  # responsibilities on the active columns, rows renormalised
    r = resp_fn(i, xc) * active
    total = jnp.sum(r, axis=1, keepdims=True)
    return r / jnp.where(total > 0, total, 1)

  params = params_from_responsibilities(x_chunks, w_chunks, active_resp_fn, num_components,
                                        covariance_type, reg_covar, shard=shard)
  d = x_chunks.shape[-1]
  cov_shape = model.covariance_shape(covariance_type, num_components, d)
  parking = GMMParams(None, jnp.zeros((num_components, d), dtype),
                      jnp.ones(cov_shape, dtype) if covariance_type in ("diag", "spherical")
                      else jnp.broadcast_to(jnp.eye(d, dtype=dtype), cov_shape), covariance_type)
  return park_inactive(params, parking, num_active)


# --------------------------------------------------------------------------------------------
# The fit.


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


def check_fixed(fixed: Any, init: Any) -> tuple[str, ...]:
  """Checks ``fit``'s ``fixed=``: names in :data:`FIXABLE`, and an ``init`` holding their values.

  Returns:
    ``fixed`` as a tuple.

  Raises:
    ValueError: unknown names, or ``fixed`` with a named initialisation.
  """
  fixed = mixture.check_fixed(fixed)
  unknown = [f for f in fixed if f not in FIXABLE]
  if unknown:
    raise ValueError(f"fixed names {unknown!r}; the fields that can be fixed are "
                     f"{', '.join(map(repr, FIXABLE))}.")
  if fixed and isinstance(init, str):
    raise ValueError(
        f"fixed={fixed!r} keeps fields at the values of init, so init must hold them: pass "
        "init=gmm.GMMParams(weights, means, covariances, covariance_type) (its other fields are "
        "the starting values of the free ones), not the named initialisation "
        f"{init!r}. Starting values from an initialisation: "
        f"gmm.fit(key, x, K, init={init!r}, max_iter=0).params.")
  return fixed


def fit(key: Key, x: DataLike, num_components: int, covariance_type: str = "full",
        init: str | GMMParams | GMMFitResult = "kmeans", n_init: int = 1, max_iter: int = 100,
        tol: float = 1e-3, reg_covar: float = 1e-6, sample_weight: WeightsLike | None = None, *,
        chunk_size: int | None = None, mesh: jax.sharding.Mesh | None = None,
        axis_name: str | None = None, check_finite: bool = True,
        fixed: tuple[str, ...] = (), missing: str = "error",
        num_active: int | ArrayLike | None = None) -> GMMFitResult:
  r"""Fits a Gaussian mixture by EM, on the device, in one compiled call.

  Each iteration runs ``e_step`` (streamed over chunks of rows) and ``m_step``; the loop is
  :func:`lvmjax.fixed_point.fixed_point` (a ``lax.while_loop``). ``n_init`` restarts run as one
  ``vmap`` over keys and the restart with the largest final mean log-likelihood wins. Compiles
  once per shape and static configuration. This is :func:`lvmjax.mixture.fit` of
  :class:`GaussianFamily` with the GMM's own initialisations.

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
      "random_from_data" (hard responsibilities at K distinct random points), a ``GMMParams`` to
      start from, or a ``GMMFitResult`` of an earlier call to continue: its ``n_iter``,
      ``log_likelihood`` history and convergence test carry on, so fitting in blocks
      (``max_iter=10``, then ``init=result, max_iter=20``, ...) runs the iterations of one
      uninterrupted fit (equal up to float rounding: each call centres the data and maps the
      means back; the same blocks repeat bit for bit, which is what a checkpointed run resumes
      with). A converged result is returned as it is. Built-in initialisations normalise the
      weights to sum to one.
    n_init: number of restarts (ignored, as one, when ``init`` is a GMMParams or GMMFitResult).
    max_iter: maximum number of EM iterations, counting those of a continued ``init`` result
      (0 returns the initial parameters).
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
      Without ``mesh``, large data (NumPy or an uncommitted ``jax.Array``) on a multi-core CPU
      are split over its devices by themselves (:func:`lvmjax.sharding.auto_placement`; the
      result, on the first device, equals the one-device fit up to rounding).
    axis_name: the mesh axis of the rows (default "data", else the mesh's first axis).
    check_finite: raise ValueError when the fitted parameters are not finite (False returns
      them, for a caller that reports the failure itself, e.g. with the iteration it happened).
    fixed: a subset of ("weights", "means", "covariances") kept at the values of ``init``, which
      must then be a ``GMMParams`` (or a ``GMMFitResult``) holding them: the fit returns those
      fields bit for bit, on one device or a mesh, and the free ones are the constrained maximum
      likelihood (with fixed means, the covariances are the moments about them). A named
      ``init`` with ``fixed`` is a ValueError: the values an initialisation draws are no
      values to freeze.
    missing: "error" (NaN in x is a ValueError) or "marginalize": NaN entries are missing at
      random and integrated out exactly; EM with the conditional moments of the missing entries
      (:class:`MissingGaussianFamily`, :mod:`lvmjax.gmm.missing`), whose ``log_likelihood`` is
      that of the observed entries. Named initialisations run on the data with each missing
      entry set to its column's observed mean. A row or a column with nothing observed is a
      ValueError. The default ``chunk_size`` is smaller (the E-step holds (chunk, K, D, D)
      for "full").
    num_active: None (all K components), or k with 1 <= k <= K, an int or an int32 scalar that
      may be traced: fit a mixture of k components inside the program compiled for K, so that
      one compilation serves every k (model selection over the number of components, as
      ``experiments/fit_gmm`` does). Components k.. keep weight exactly 0 and take no
      responsibility; ``params`` holds the k-component fit in its first k components
      (:func:`lvmjax.gmm.first_components`) and placeholders after. The initialisations draw for k components
      (``"kmeans"`` and ``"k-means++"`` with k-means++'s ``n_local_trials`` of K, so their
      draws differ from a K=k fit's); from ``init`` parameters, whose components k.. are
      ignored, the fit equals that of their first k components up to rounding.

  Returns:
    ``GMMFitResult(params, log_likelihood, n_iter, converged, lower_bound)``.

  Raises:
    ValueError: on bad input (see the message), or when the fit produced non-finite parameters
      (ill-defined covariances: increase ``reg_covar`` or reduce ``num_components``).

  Examples:
    >>> import jax
    >>> from lvmjax import gmm
    >>> x, _ = gmm.sample(gmm.GMMParams(
    ...     jax.numpy.array([.5, .5]), jax.numpy.array([[-3., 0.], [3., 0.]]),
    ...     jax.numpy.array([1., 1.]), "spherical"), jax.random.key(0), 500)
    >>> result = gmm.fit(jax.random.key(1), x, 2)
    >>> bool(result.converged)
    True
  """
  _checks.check_fit_inputs(key, x)  # a PRNG key; float32/float64 data (ints converted)
  placement = sharding.mesh_of(x, mesh, axis_name)
  missing_data.check_missing_data(x, missing)
  marginalize = missing == "marginalize"
  family_class = MissingGaussianFamily if marginalize else GaussianFamily
  mixture.check_data(family_class(covariance_type), x)
  n, d = np.shape(x)
  num_components, n_init, max_iter, tol, reg_covar = check_fit_options(
      num_components, covariance_type, n_init, max_iter, tol, reg_covar)
  if n < num_components:
    raise ValueError(
        f"x has {n} points but num_components={num_components}: a mixture needs at least as many "
        "points as components. Use fewer components or more data.")
  sharding.check_sample_weight(sample_weight, n)
  x, w, placement, dtype = mixture.place_rows(x, sample_weight, num_components, placement)
  fixed = check_fixed(fixed, init)
  num_active = _checks.check_num_active(num_active, num_components, "num_components")
  if isinstance(init, GMMFitResult):
    model.check_init(init.params, d, num_components, covariance_type)
    init_kind = "result"
  elif isinstance(init, GMMParams):
    model.check_init(init, d, num_components, covariance_type)
    init_kind = "params"
    if num_active is not None:
      init = _park_given(init, num_active)
  else:
    if not isinstance(init, str) or init not in INITS:
      raise ValueError(f"Unknown init {init!r}; expected one of {', '.join(map(repr, INITS))}, "
                       "a gmm.GMMParams or a gmm.GMMFitResult to continue.")
    init_kind = init
  if (w is not None and _checks.is_concrete(w) and not sharding.is_global(w)
      and int(np.count_nonzero(np.asarray(w))) < num_components
      and init_kind in ("random_from_data", "k-means++", "kmeans")):
    raise ValueError(f"Only {int(np.count_nonzero(np.asarray(w)))} points have positive "
                     f"sample_weight, fewer than num_components={num_components}.")
  if chunk_size:
    chunk = _checks.check_positive_int(chunk_size, "chunk_size")
  elif marginalize:
    chunk = missing_data.default_chunk_size(n, num_components, d, covariance_type)
  else:
    chunk = default_chunk_size(n, num_components, d)
  family = family_class(covariance_type, jnp.asarray(reg_covar, dtype), num_active)
  result = mixture.fit_arrays(family, key, x, w, num_components, init=init, n_init=n_init,
                              max_iter=max_iter, tol=tol, chunk_size=chunk, placement=placement,
                              fixed=fixed)
  result = GMMFitResult(*result)
  if check_finite and _checks.is_concrete(result.n_iter):
    leaves = jax.tree.leaves(result.params)
    if not all(np.all(np.isfinite(np.asarray(jax.device_get(a)))) for a in leaves):
      raise ValueError(
          "Fitting the mixture model failed because some components have ill-defined empirical "
          "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
          "the number of components, or increase reg_covar.")
  return result
