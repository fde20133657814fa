r"""Mixtures of factor analysers and of probabilistic PCA: Gaussian mixtures of low-rank covariance.

Component k is a factor analyser with q latent factors:

.. math::

  p(k) = w_k, \quad p(z) = \mathcal{N}(0, I_q), \quad
  p(x \mid z, k) = \mathcal{N}(\mu_k + W_k z, \Psi_k), \quad
  p(x \mid k) = \mathcal{N}(\mu_k, \Sigma_k), \quad \Sigma_k = W_k W_k^\top + \Psi_k,

with :math:`\Psi_k` diagonal (``noise="diagonal"``: mixtures of factor analysers, Ghahramani &
Hinton 1996, with one :math:`\Psi_k` per component as in McLachlan & Peel 2000) or isotropic,
:math:`\Psi_k = \sigma_k^2 I` (``noise="isotropic"``: mixtures of probabilistic PCA, Tipping &
Bishop 1999). :math:`\Sigma_k` has D + Dq parameters instead of D(D+1)/2.

**Densities** never form a D x D matrix. With :math:`B_k = \Psi_k^{-1} W_k` (D, q),
:math:`M_k = I_q + W_k^\top \Psi_k^{-1} W_k = L_k L_k^\top` (q, q) and
:math:`u_{nk} = B_k^\top (x_n - \mu_k)`, the Woodbury identity and the matrix determinant lemma give

.. math::

  (x - \mu_k)^\top \Sigma_k^{-1} (x - \mu_k) = \sum_d \frac{(x_d - \mu_{kd})^2}{\Psi_{kd}}
    - \lVert L_k^{-1} u_{nk} \rVert^2, \qquad
  \log |\Sigma_k| = \sum_d \log \Psi_{kd} + 2 \sum_j \log L_{k,jj},

so an E-step costs O(N K D q). The posterior of the factors given component k is
:math:`p(z \mid x, k) = \mathcal{N}(M_k^{-1} u_{nk}, M_k^{-1})` (the "factor scores" are its mean).

**EM** runs on :mod:`lvmjax.mixture` (chunking, sample weights, vmapped restarts, meshes,
streaming) with the additive statistics, about the E-step's means :math:`c_k = \mu_k`,

.. math::

  N_k = \sum_n s_n r_{nk}, \quad
  S^{(1)}_k = \sum_n s_n r_{nk} (x_n - c_k), \quad
  S^{(2)}_k = \sum_n s_n r_{nk} (x_n - c_k)^{\odot 2}, \quad
  P_k = \sum_n s_n r_{nk} (x_n - c_k)\, u_{nk}^\top \ (D \times q),

all O(N K D q): the D x D scatter :math:`S_k` is only ever needed times :math:`B_k`, and
:math:`N_k S_k B_k = P_k - N_k \delta_k \delta_k^\top B_k` about the new mean
(:math:`\delta_k = S^{(1)}_k / N_k`), while :math:`B_k^\top P_k = \sum_n s_n r_{nk} u_{nk}
u_{nk}^\top`. Both M-steps are exact EM steps on these sums:

* ``"diagonal"`` (Ghahramani & Hinton's joint update of :math:`[W_k\ \mu_k]` with the augmented
  factor :math:`\tilde z = (z, 1)`):

  .. math::

    [W_k\ \mu_k]^{\mathrm{new}} = \Big(\sum_n r_{nk} x_n \mathbb{E}[\tilde z]^\top\Big)
      \Big(\sum_n r_{nk} \mathbb{E}[\tilde z \tilde z^\top]\Big)^{-1}, \quad
    \Psi_k^{\mathrm{new}} = \tfrac{1}{N_k} \operatorname{diag}\Big(\sum_n r_{nk} x_n x_n^\top
      - [W_k\ \mu_k]^{\mathrm{new}} \sum_n r_{nk} \mathbb{E}[\tilde z] x_n^\top\Big) + \epsilon;

* ``"isotropic"`` (Tipping & Bishop's update: :math:`\mu_k` = the responsibility-weighted mean,
  then one EM step of PPCA on the local covariance :math:`S_k` about it), with
  :math:`G_k = M_k^{-1} B_k^\top`:

  .. math::

    W_k^{\mathrm{new}} = S_k G_k^\top (M_k^{-1} + G_k S_k G_k^\top)^{-1}, \quad
    \sigma_k^{2,\mathrm{new}} = \tfrac{1}{D} \operatorname{tr}(S_k - W_k^{\mathrm{new}} G_k S_k)
      + \epsilon.

With q = 0 the first is exactly the M-step of ``gmm.fit(covariance_type="diag")`` and the second
that of ``"spherical"``; with K = 1 the second is :func:`lvmjax.ppca.em_step`.

References:
  Z. Ghahramani and G. E. Hinton. The EM algorithm for mixtures of factor analyzers. Technical
  report CRG-TR-96-1, University of Toronto, 1996.
  M. E. Tipping and C. M. Bishop. Mixtures of probabilistic principal component analyzers.
  Neural Computation 11(2):443-482, 1999.

Examples:
  >>> import jax
  >>> from lvmjax import gmm
  >>> x = jax.random.normal(jax.random.key(0), (200, 5))
  >>> result = gmm.factor.fit(jax.random.key(1), x, 2, rank=1, max_iter=5)
  >>> result.params.factors.shape
  (2, 5, 1)
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import linalg
from lvmjax import mixture
from lvmjax import sharding
from lvmjax.gmm import em
from lvmjax.gmm import model
from lvmjax.types import (Data, DataLike, Key, Labels, Latents, LogDensity, LogJoint,
                          Responsibilities, WeightsLike)

__all__ = [
    "NOISE_TYPES", "INITS", "FactorParams", "FactorStats", "FactorFitResult", "FactorFamily",
    "check_params", "fit", "log_joint", "log_marginal", "posterior", "map_latent",
    "latent_posterior", "m_step", "sample", "to_gmm_params", "num_parameters",
]

#: ``"diagonal"``: a diagonal :math:`\Psi_k` (factor analysers); ``"isotropic"``:
#: :math:`\Psi_k = \sigma_k^2 I` (probabilistic PCA).
NOISE_TYPES = ("diagonal", "isotropic")
#: The initialisations of :func:`fit`: the GMM's (:data:`lvmjax.gmm.INITS`).
INITS = em.INITS

_HIGHEST = jax.lax.Precision.HIGHEST
_LOG_2PI = math.log(2.0 * math.pi)


class FactorParams(NamedTuple):
  r"""Parameters of a mixture of K factor analysers (or PPCAs) of rank q in D dimensions.

  Attributes:
    weights: (K,) mixing proportions, non-negative, summing to one.
    means: (K, D) :math:`\mu_k`.
    factors: (K, D, q) the loadings :math:`W_k` (q may be 0).
    noise: the noise variances: (K, D), the diagonal of :math:`\Psi_k` (factor analysers), or
      (K,), :math:`\sigma_k^2` with :math:`\Psi_k = \sigma_k^2 I` (PPCA); > 0.
  """
  weights: jax.Array
  means: jax.Array
  factors: jax.Array
  noise: jax.Array

  @property
  def noise_type(self) -> str:
    """"isotropic" when ``noise`` is (K,), else "diagonal"."""
    return "isotropic" if np.ndim(self.noise) == 1 else "diagonal"

  def covariances(self) -> jax.Array:
    r"""The implied full covariances :math:`\Sigma_k = W_k W_k^\top + \Psi_k`, (K, D, D).

    For inspection, tests and :func:`to_gmm_params`; the densities never form them.
    """
    w = jnp.asarray(self.factors)
    psi = _psi(self)
    return (jnp.einsum("kdq,keq->kde", w, w, precision=_HIGHEST)
            + psi[:, :, None] * jnp.eye(w.shape[1], dtype=psi.dtype)[None])


class FactorStats(NamedTuple):
  r"""Additive E-step statistics (about the E-step's means :math:`c_k`; add only statistics taken
  with the same parameters, as every EM iteration does).

  Attributes:
    counts: (K,) :math:`N_k = \sum_n s_n r_{nk}`.
    sum_x: (K, D) :math:`\sum_n s_n r_{nk} (x_n - c_k)`.
    sum_xx: (K, D) :math:`\sum_n s_n r_{nk} (x_n - c_k)^{\odot 2}` (the scatter's diagonal).
    sum_xu: (K, D, q) :math:`\sum_n s_n r_{nk} (x_n - c_k) u_{nk}^\top`,
      :math:`u_{nk} = W_k^\top \Psi_k^{-1} (x_n - c_k)`.
    log_likelihood: scalar :math:`\sum_n s_n \log p(x_n)`.
    total_weight: scalar :math:`\sum_n s_n`.
  """
  counts: jax.Array
  sum_x: jax.Array
  sum_xx: jax.Array
  sum_xu: jax.Array
  log_likelihood: jax.Array
  total_weight: jax.Array


class FactorFitResult(NamedTuple):
  """What :func:`fit` returns (the fields of ``gmm.GMMFitResult``).

  Attributes:
    params: the fitted :class:`FactorParams` (of the best restart).
    log_likelihood: mean per-point log-likelihood at each iteration, (n_iter,): entry i is that
      of the parameters iteration i started from (NaN-padded to ``max_iter`` under ``vmap``).
    n_iter: number of EM iterations run.
    converged: whether the change in mean log-likelihood fell below ``tol``.
    lower_bound: the last entry of ``log_likelihood``.
  """
  params: FactorParams
  log_likelihood: jax.Array
  n_iter: jax.Array
  converged: jax.Array
  lower_bound: jax.Array


# --------------------------------------------------------------------------------------------
# Densities.


def _psi(params: FactorParams) -> jax.Array:
  """(K, D) the diagonal of every :math:`\\Psi_k`."""
  noise = jnp.asarray(params.noise)
  means = jnp.asarray(params.means)
  return noise[:, None] * jnp.ones_like(means) if noise.ndim == 1 else noise


class _Prepared(NamedTuple):
  """What an E-step computes once per iteration."""
  means: jax.Array      # (K, D)
  inv_psi: jax.Array    # (K, D) 1 / Psi_k
  proj: jax.Array       # (K, D, q) B_k = Psi_k^{-1} W_k
  chol_inv: jax.Array   # (K, q, q) L_k^{-1}, M_k = L_k L_k^T
  offset: jax.Array     # (K,) log w_k - D/2 log 2 pi - 1/2 log |Sigma_k|


def _inverse_m(params: FactorParams) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""(:math:`\Psi^{-1}` (K, D), :math:`B` (K, D, q), :math:`L^{-1}` (K, q, q)) with
  :math:`M = I + W^\top B = L L^\top`."""
  w = jnp.asarray(params.factors)
  inv_psi = 1.0 / _psi(params)
  proj = w * inv_psi[:, :, None]
  q = w.shape[-1]
  eye = jnp.broadcast_to(jnp.eye(q, dtype=w.dtype), (w.shape[0], q, q))
  m = eye + jnp.einsum("kdq,kdp->kqp", w, proj, precision=_HIGHEST)
  chol = linalg.cholesky(m)
  return inv_psi, proj, linalg.triangular_solve(chol, eye, left_side=True, lower=True)


def _prepare(params: FactorParams) -> _Prepared:
  inv_psi, proj, chol_inv = _inverse_m(params)
  d = params.means.shape[-1]
  log_det = (-jnp.sum(jnp.log(inv_psi), axis=1)
             - 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_inv, axis1=-2, axis2=-1)), axis=1))
  offset = jnp.log(jnp.asarray(params.weights)) - 0.5 * d * _LOG_2PI - 0.5 * log_det
  return _Prepared(jnp.asarray(params.means), inv_psi, proj, chol_inv, offset)


def _rows(prep: _Prepared, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""(log-joint (K, n), x - mu_k (K, n, D), u (K, n, q)) of rows x (n, D), in O(n K D q)."""
  diff = x[None, :, :] - prep.means[:, None, :]
  u = jnp.einsum("knd,kdq->knq", diff, prep.proj, precision=_HIGHEST)
  v = jnp.einsum("knq,kpq->knp", u, prep.chol_inv, precision=_HIGHEST)  # L^{-1} u
  maha = (jnp.einsum("knd,kd->kn", diff * diff, prep.inv_psi, precision=_HIGHEST)
          - jnp.sum(v * v, axis=-1))
  return prep.offset[:, None] - 0.5 * maha, diff, u


def check_params(params: FactorParams, num_features: int | None = None, *,
                 check_values: bool = True) -> None:
  """Raises ``ValueError`` when ``params`` is not a valid mixture of factor analysers.

  Shapes are always checked; with ``check_values`` and concrete arrays also that the weights
  are a probability vector and the noise variances finite and > 0.

  Args:
    params: :class:`FactorParams`.
    num_features: the D of the data they will be used with, if known.
    check_values: whether to inspect values (needs concrete arrays).

  Raises:
    ValueError: what is wrong.
  """
  if not isinstance(params, FactorParams):
    raise ValueError(f"Expected a gmm.factor.FactorParams, got {type(params).__name__}.")
  w_shape, m_shape, f_shape, n_shape = (np.shape(a) for a in params)
  if len(m_shape) != 2:
    raise ValueError(f"means must have shape (K, D), got {m_shape}.")
  k, d = m_shape
  if num_features is not None and d != num_features:
    raise ValueError(f"The parameters have D={d} features (means shape {m_shape}) but the data "
                     f"has {num_features} columns.")
  if w_shape != (k,):
    raise ValueError(f"weights must have shape ({k},) to match means {m_shape}, got {w_shape}.")
  if len(f_shape) != 3 or f_shape[:2] != (k, d):
    raise ValueError(f"factors must have shape (K, D, rank) = ({k}, {d}, rank), got {f_shape}.")
  if n_shape not in ((k,), (k, d)):
    raise ValueError(f"noise must have shape ({k}, {d}) (diagonal, factor analysers) or ({k},) "
                     f"(isotropic, PPCA), got {n_shape}.")
  if not check_values or not all(_checks.is_concrete(a) for a in params):
    return
  weights = np.asarray(params.weights, np.float64)
  if not np.all(np.isfinite(weights)) or np.any(weights < 0) or abs(weights.sum() - 1) > 1e-5:
    raise ValueError(f"weights must be non-negative and sum to one, got {weights}.")
  for name in ("means", "factors"):
    if not np.all(np.isfinite(np.asarray(getattr(params, name), np.float64))):
      raise ValueError(f"{name} contain NaN or infinite values.")
  noise = np.asarray(params.noise, np.float64)
  if not np.all(np.isfinite(noise)) or np.any(noise <= 0):
    raise ValueError("noise variances must be finite and > 0 (increase reg_covar if a fit "
                     "drove them to 0).")


def _flatten(params: FactorParams, x: ArrayLike) -> tuple[jax.Array, tuple[int, ...]]:
  check_params(params)  # values too when concrete (not under a user's jit)
  x = jnp.asarray(x)
  d = np.shape(params.means)[-1]
  if x.ndim < 1 or x.shape[-1] != d:
    raise ValueError(f"x must have shape (..., {d}) to match the means (K, D) = "
                     f"{np.shape(params.means)}, got {x.shape}.")
  dtype = jnp.result_type(x.dtype, jnp.asarray(params.means).dtype, float)
  return x.reshape(-1, d).astype(dtype), x.shape[:-1]


def log_joint(params: FactorParams, x: ArrayLike) -> LogJoint:
  r"""The log-joint :math:`\log p(x, k) = \log w_k + \log \mathcal{N}(x; \mu_k, W_k W_k^\top +
  \Psi_k)` through the Woodbury identity (module docstring), O(K D q) per point.

  Args:
    params: :class:`FactorParams`.
    x: points of shape (..., D).

  Returns:
    (..., K) the log-joint of every component.

  Examples:
    >>> import jax.numpy as jnp
    >>> p = FactorParams(jnp.array([1.0]), jnp.zeros((1, 3)), jnp.ones((1, 3, 1)),
    ...                  jnp.ones((1, 3)))
    >>> log_joint(p, jnp.zeros((4, 3))).shape
    (4, 1)
  """
  return _reduce(params, x, None)


def _reduce(params: FactorParams, x: ArrayLike, reduce: str | None) -> jax.Array:
  """Checks at the door, then one jitted program: the log-joint reduced over k."""
  flat, batch = _flatten(params, x)
  out = _rows_reduce(params, flat, reduce)
  return out.reshape(*batch, *out.shape[1:])


@functools.partial(jax.jit, static_argnames="reduce")
def _rows_reduce(params: FactorParams, flat: jax.Array, reduce: str | None) -> jax.Array:
  lj, _, _ = _rows(_prepare(params), flat)
  return model.reduce_components(lj.T, reduce)


def log_marginal(params: FactorParams, x: ArrayLike) -> LogDensity:
  r"""The log-likelihood :math:`\log p(x) = \operatorname{logsumexp}_k \log p(x, k)`, (...,)."""
  return _reduce(params, x, "logsumexp")


def posterior(params: FactorParams, x: ArrayLike) -> Responsibilities:
  r"""The responsibilities :math:`p(k \mid x)`, (..., K)."""
  return _reduce(params, x, "softmax")


def map_latent(params: FactorParams, x: ArrayLike) -> jax.Array:
  r"""The MAP component :math:`\arg\max_k p(k \mid x)`, (...,). Given k, the MAP of the factors
  is the posterior mean of :func:`latent_posterior` (the posterior is Gaussian)."""
  return _reduce(params, x, "argmax")


def latent_posterior(params: FactorParams, x: ArrayLike) -> tuple[jax.Array, jax.Array]:
  r"""The posterior of the factors given each component, :math:`p(z \mid x, k) =
  \mathcal{N}(M_k^{-1} W_k^\top \Psi_k^{-1} (x - \mu_k),\ M_k^{-1})`,
  :math:`M_k = I + W_k^\top \Psi_k^{-1} W_k`.

  The means are the factor scores :math:`\mathbb{E}[z \mid x, k]`; weight them with
  :func:`posterior` for :math:`\mathbb{E}[z \mid x]` of a shared latent space.

  Args:
    params: :class:`FactorParams`.
    x: points of shape (..., D).

  Returns:
    ``(mean (..., K, q), covariance (K, q, q))``; the covariance does not depend on x.
  """
  flat, batch = _flatten(params, x)
  mean, m_inv = _latent_posterior(params, flat)
  return mean.reshape(*batch, *mean.shape[1:]), m_inv


@jax.jit
def _latent_posterior(params: FactorParams, flat: jax.Array) -> tuple[jax.Array, jax.Array]:
  prep = _prepare(params)
  _, _, u = _rows(prep, flat)
  m_inv = jnp.einsum("kpq,kpr->kqr", prep.chol_inv, prep.chol_inv, precision=_HIGHEST)
  return jnp.einsum("knq,kqr->nkr", u, m_inv, precision=_HIGHEST), m_inv


def sample(params: FactorParams, key: Key, n: int) -> tuple[Data, Labels, Latents]:
  r"""Draws n points: :math:`k \sim \mathrm{Cat}(w)`, :math:`z \sim \mathcal{N}(0, I_q)`,
  :math:`x = \mu_k + W_k z + \varepsilon`, :math:`\varepsilon \sim \mathcal{N}(0, \Psi_k)`.

  The model comes first, then the key, then the count (the project's key-order rule).

  Args:
    params: :class:`FactorParams`.
    key: PRNG key.
    n: number of points.

  Returns:
    ``(x (n, D), k (n,), z (n, q))``: the points, their components and their factors.
  """
  params, key = _checks.params_first(params, key, FactorParams, "gmm.factor.sample")
  _checks.check_key(key)
  n = _checks.check_positive_int(n, "n", minimum=0)
  check_params(params)
  return _sample(params, key, n)


@functools.partial(jax.jit, static_argnums=2)
def _sample(params: FactorParams, key: Key, n: int) -> tuple[Data, Labels, Latents]:
  means = jnp.asarray(params.means)
  w = jnp.asarray(params.factors)
  key_k, key_z, key_e = jax.random.split(key, 3)
  k = jax.random.categorical(key_k, jnp.log(jnp.asarray(params.weights)), shape=(n,))
  z = jax.random.normal(key_z, (n, w.shape[-1]), means.dtype)
  eps = jax.random.normal(key_e, (n, means.shape[-1]), means.dtype) * jnp.sqrt(_psi(params))[k]
  return means[k] + jnp.einsum("ndq,nq->nd", w[k], z, precision=_HIGHEST) + eps, k, z


def to_gmm_params(params: FactorParams) -> model.GMMParams:
  r"""The same mixture as ``gmm.GMMParams`` with covariance_type "full",
  :math:`\Sigma_k = W_k W_k^\top + \Psi_k` (K, D, D), for every function of :mod:`lvmjax.gmm`."""
  check_params(params, check_values=False)
  return model.GMMParams(jnp.asarray(params.weights), jnp.asarray(params.means),
                         params.covariances(), "full")


def num_parameters(params: FactorParams) -> int:
  """Free parameters: K-1 weights, K·D means, K (D q - q (q-1)/2) loadings (up to rotation), and
  K·D (diagonal) or K (isotropic) noise variances."""
  k, d, q = np.shape(params.factors)
  noise = k * d if params.noise_type == "diagonal" else k
  return int(k - 1 + k * d + k * (d * q - q * (q - 1) // 2) + noise)


# --------------------------------------------------------------------------------------------
# EM.


def _spd_solve(a: jax.Array, b: jax.Array) -> jax.Array:
  """X with A X = B for symmetric positive definite A (K, m, m), B (K, m, r), by Cholesky."""
  chol = linalg.cholesky(0.5 * (a + jnp.swapaxes(a, -1, -2)))
  y = linalg.triangular_solve(chol, b, left_side=True, lower=True)
  return linalg.triangular_solve(chol, y, left_side=True, lower=True, transpose_a=True)


def m_step(params: FactorParams, stats: FactorStats, reg_covar: Any = 1e-6,
           fixed: tuple[str, ...] = ()) -> FactorParams:
  r"""The closed-form M-step (module docstring) on summed :class:`FactorStats`, O(K D q^2).

  The noise type is that of ``params`` (Ghahramani & Hinton's joint update for diagonal noise,
  Tipping & Bishop's for isotropic noise). As in ``gmm.m_step``, :math:`N_k` gets 10·eps added, so
  a component that lost all its points keeps its mean with :math:`W_k = 0` and noise
  ``reg_covar``.

  With ``fixed``, the free fields maximise the expected complete-data log-likelihood given the
  fixed ones (a conditional M-step, so EM still never decreases the likelihood): fixed means drop
  the intercept of the regression of :math:`x` on :math:`\tilde z` (and :math:`S_k` is taken about
  them), fixed factors leave :math:`\mu_k = \bar x_k - W_k \overline{\mathbb{E}[z]}_k`, and the
  noise is the expected squared residual of whatever :math:`[W_k\ \mu_k]` results:
  :math:`\Psi_k = \operatorname{diag}(\overline{x'x'^\top} - 2 A \bar R^\top + A \bar G A^\top)`
  with :math:`A = [W_k\ \mu'_k]`, :math:`\bar R = \overline{x' \mathbb{E}[\tilde z]^\top}`,
  :math:`\bar G = \overline{\mathbb{E}[\tilde z \tilde z^\top]}` (bars: responsibility-weighted
  means). Fixed weights or noise change no other update.

  Args:
    params: the parameters the statistics were taken with (their means are the centres).
    stats: the E-step's statistics.
    reg_covar: :math:`\epsilon`, added to the noise variances.
    fixed: names of fields kept at their values in ``params``.

  Returns:
    The new :class:`FactorParams`.
  """
  k, d, q = params.factors.shape
  _, proj, chol_inv = _inverse_m(params)
  m_inv = jnp.einsum("kpq,kpr->kqr", chol_inv, chol_inv, precision=_HIGHEST)
  counts = stats.counts + 10 * jnp.finfo(stats.counts.dtype).eps
  delta = stats.sum_x / counts[:, None]                                    # (K, D)
  if "means" in fixed:
    delta = jnp.zeros_like(delta)  # moments about the fixed means (the E-step's centres)
  xu = stats.sum_xu / counts[:, None, None]                                # (K, D, q)
  bd = jnp.einsum("kdq,kd->kq", proj, delta, precision=_HIGHEST)           # B^T delta
  uu = jnp.einsum("kdq,kdp->kqp", proj, xu, precision=_HIGHEST)            # sum r u u^T / N
  xx = stats.sum_xx / counts[:, None]
  weights = params.weights if "weights" in fixed else counts / jnp.sum(counts)
  if params.noise_type == "diagonal":
    # [W mu'] (sum r E[z~ z~^T]) = sum r x' E[z~]^T, all divided by N_k; x' = x - c_k.
    ez = jnp.einsum("kqp,kp->kq", m_inv, bd, precision=_HIGHEST)           # sum r E[z] / N
    ezz = m_inv + m_inv @ uu @ m_inv
    gram = jnp.concatenate([
        jnp.concatenate([ezz, ez[:, :, None]], axis=2),
        jnp.concatenate([ez[:, None, :], jnp.ones((k, 1, 1), ezz.dtype)], axis=2)], axis=1)
    rhs = jnp.concatenate([xu @ m_inv, delta[:, :, None]], axis=2)         # (K, D, q + 1)
    if "factors" not in fixed and "means" not in fixed:
      sol = jnp.swapaxes(_spd_solve(gram, jnp.swapaxes(rhs, 1, 2)), 1, 2)  # (K, D, q + 1)
      resid = xx - jnp.sum(sol * rhs, axis=2)
    else:
      if "factors" in fixed:
        w = params.factors
      else:  # means fixed: no intercept
        w = jnp.swapaxes(_spd_solve(ezz, jnp.swapaxes(rhs[:, :, :q], 1, 2)), 1, 2)
      mu = jnp.zeros_like(delta) if "means" in fixed else delta - jnp.einsum(
          "kdq,kq->kd", w, ez, precision=_HIGHEST)
      sol = jnp.concatenate([w, mu[:, :, None]], axis=2)
      resid = xx - 2 * jnp.sum(sol * rhs, axis=2) + jnp.sum((sol @ gram) * sol, axis=2)
    psi = jnp.maximum(resid, 0.0) + reg_covar
    return FactorParams(weights, params.means + sol[:, :, q], sol[:, :, :q], psi)
  # Tipping & Bishop: S_k about the new mean mu_k + delta_k; S G^T = S B M^{-1}.
  sg = (xu - delta[:, :, None] * bd[:, None, :]) @ m_inv                  # (K, D, q)
  e = m_inv + m_inv @ (uu - bd[:, :, None] * bd[:, None, :]) @ m_inv      # M^-1 + G S G^T
  trace = jnp.sum(xx - delta * delta, axis=1)
  if "factors" in fixed:
    w = params.factors
    resid = trace - 2 * jnp.sum(w * sg, axis=(1, 2)) + jnp.sum((w @ e) * w, axis=(1, 2))
  else:
    w = jnp.swapaxes(_spd_solve(e, jnp.swapaxes(sg, 1, 2)), 1, 2)
    resid = trace - jnp.sum(w * sg, axis=(1, 2))
  sigma2 = jnp.maximum(resid / d, 0.0) + reg_covar
  return FactorParams(weights, params.means + delta, w, sigma2)


@struct.dataclass
class FactorFamily(mixture.MixtureFamily):
  r"""Mixtures of factor analysers / PPCA as a :class:`lvmjax.mixture.MixtureFamily`: what
  :func:`fit` runs, and what ``mixture.fit_streaming`` takes for data beyond memory.

  Its E-step returns :class:`FactorStats` (O(n K D q) per chunk of n rows, module docstring);
  :func:`m_step` is closed-form. Initialisations are the GMM's (:data:`INITS`), as "diag"
  Gaussians, with random loadings :math:`W_{k,dj} \sim \mathcal{N}(0, \bar v_k / D)`
  (:math:`\bar v_k` the component's mean variance, drawn with ``fold_in(key, 1)``) and
  :math:`\Psi_k` the component's variances (their mean for isotropic noise).

  Attributes:
    noise_type: "diagonal" or "isotropic" (static).
    rank: q, the number of factors (static).
    reg_covar: added to the noise variances in every M-step (traced).
  """
  noise_type: str = struct.field(pytree_node=False, default="diagonal")
  rank: int = struct.field(pytree_node=False, default=1)
  reg_covar: Any = 1e-6

  def log_component(self, params: FactorParams, x: jax.Array) -> jax.Array:
    """(n, K) :math:`\\log \\mathcal{N}(x_n; \\mu_k, W_k W_k^\\top + \\Psi_k)`."""
    lj, _, _ = _rows(_prepare(params), x)
    return lj.T - jnp.log(params.weights)[None, :]

  def m_step(self, params: FactorParams, stats: FactorStats) -> FactorParams:
    """:func:`m_step` with this family's ``reg_covar``."""
    return m_step(params, stats, self.reg_covar)

  def m_step_fixed(self, params: FactorParams, stats: FactorStats,
                   fixed: tuple[str, ...]) -> FactorParams:
    """:func:`m_step` given the fields named in ``fixed`` (the conditional maximiser)."""
    return m_step(params, stats, self.reg_covar, fixed)

  def prepare(self, params: FactorParams) -> _Prepared:
    return _prepare(params)

  def chunk_stats(self, prepared: _Prepared, x: jax.Array, w: jax.Array) -> FactorStats:
    lj, diff, u = _rows(prepared, x)
    log_px = jax.nn.logsumexp(lj, axis=0)
    keep = w > 0  # weight-0 padding contributes exactly 0
    wr = jnp.where(keep[None, :], w[None, :] * jnp.exp(lj - log_px[None, :]), 0)  # (K, n)
    wd = wr[:, :, None] * diff
    return FactorStats(
        jnp.sum(wr, axis=1), jnp.sum(wd, axis=1), jnp.sum(wd * diff, axis=1),
        jnp.einsum("knd,knq->kdq", wd, u, precision=_HIGHEST),
        jnp.sum(jnp.where(keep, w * log_px, 0)), jnp.sum(w))

  def initialize(self, key: Key, rows: mixture.Rows, num_components: int, init: str,
                 shard: sharding.Shard | None = None) -> FactorParams:
    diag = em.GaussianFamily("diag", self.reg_covar).initialize(key, rows, num_components, init,
                                                                 shard)
    var = diag.covariances  # (K, D)
    d = var.shape[-1]
    scale = jnp.sqrt(jnp.mean(var, axis=1) / d)
    factors = jax.random.normal(jax.random.fold_in(key, 1), (num_components, d, self.rank),
                                var.dtype) * scale[:, None, None]
    noise = var if self.noise_type == "diagonal" else jnp.mean(var, axis=1)
    return FactorParams(diag.weights, diag.means, factors, noise)

  def data_shift(self, x: jax.Array, w: jax.Array, shard: sharding.Shard | None = None):
    # The GMM's: fit on centred data (float32 accuracy), shift the means back.
    return em.GaussianFamily("diag").data_shift(x, w, shard)

  def shift_params(self, params: FactorParams, shift: jax.Array) -> FactorParams:
    return params._replace(means=params.means + shift)


def _check_init(init: FactorParams, d: int, num_components: int, rank: int, noise: str) -> None:
  check_params(init, d)
  k, _, q = np.shape(init.factors)
  if (k, q, init.noise_type) != (num_components, rank, noise):
    raise ValueError(f"init has K={k} components of rank {q} with {init.noise_type} noise, but "
                     f"the fit asks for num_components={num_components}, rank={rank}, "
                     f"noise={noise!r}.")


def fit(key: Key, x: DataLike, num_components: int, rank: int, noise: str = "diagonal",
        init: str | FactorParams | FactorFitResult = "kmeans", n_init: int = 1,
        max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6,
        sample_weight: WeightsLike | None = None, *, chunk_size: int | None = None,
        mesh: jax.sharding.Mesh | None = None, axis_name: str | None = None,
        fixed: tuple[str, ...] = ()) -> FactorFitResult:
  r"""Fits a mixture of factor analysers (or of PPCA) by EM, on the device, in one compiled call.

  :func:`lvmjax.mixture.fit` of :class:`FactorFamily`: each iteration streams the E-step over
  chunks of rows (O(N K D q), no D x D matrix) and runs the closed-form M-step; ``n_init``
  restarts are one ``vmap``; ``mesh`` splits the rows over devices with one ``psum`` per
  iteration. ``tol``, ``max_iter``, ``reg_covar`` and the stopping rule are those of
  :func:`lvmjax.gmm.fit` (scikit-learn's).

  Args:
    key: PRNG key for the initialisation.
    x: (N, D) data; float32 unless it is float64 with x64 enabled.
    num_components: K.
    rank: q, factors per component, 0 <= q < D (q = 0 is the "diag" or "spherical" GMM).
    noise: "diagonal" (factor analysers, :math:`\Psi_k` diagonal) or "isotropic" (probabilistic
      PCA, :math:`\Psi_k = \sigma_k^2 I`).
    init: "kmeans", "k-means++", "random" or "random_from_data" (the GMM's initialisations of a
      "diag" mixture, plus random loadings, see :class:`FactorFamily`), a :class:`FactorParams`
      to start from, or a :class:`FactorFitResult` to continue.
    n_init: restarts (one when ``init`` is parameters or a result).
    max_iter: the most EM iterations (0 returns the initial parameters).
    tol: convergence threshold on the change in mean log-likelihood.
    reg_covar: non-negative value added to the noise variances.
    sample_weight: optional (N,) non-negative weights; integer weights equal repeating rows.
    chunk_size: rows per E-step chunk (memory O(chunk_size · K · D)).
    mesh: a ``jax.sharding.Mesh`` to split the rows over (see :func:`lvmjax.gmm.fit`).
    axis_name: the mesh axis of the rows.
    fixed: names of :class:`FactorParams` fields kept bit for bit at their values in ``init``
      (which must then be parameters or a result), e.g. ``("weights", "means")``; the free
      fields get the conditional M-step of :func:`m_step`.

  Returns:
    :class:`FactorFitResult` ``(params, log_likelihood, n_iter, converged, lower_bound)``.

  Raises:
    ValueError: bad input (the message says which), or a fit that produced non-finite
      parameters (increase ``reg_covar``).

  Examples:
    >>> import jax
    >>> from lvmjax import gmm
    >>> x = jax.random.normal(jax.random.key(0), (300, 4))
    >>> res = gmm.factor.fit(jax.random.key(1), x, 2, rank=1, noise="isotropic", max_iter=3)
    >>> res.params.noise.shape
    (2,)
  """
  _checks.check_fit_inputs(key, x)
  placement = sharding.mesh_of(x, mesh, axis_name)
  sharding.check_data(x)
  n, d = np.shape(x)
  num_components, n_init, max_iter, tol, reg_covar = em.check_fit_options(
      num_components, "diag", n_init, max_iter, tol, reg_covar)
  rank = _checks.check_positive_int(rank, "rank", minimum=0)
  if rank >= d:
    raise ValueError(f"rank must be smaller than the number of features D={d}, got rank={rank}; "
                     "with rank >= D use gmm.fit(covariance_type='full').")
  _checks.check_choice(noise, "noise", NOISE_TYPES)
  fixed = mixture.check_fixed(fixed, FactorParams(None, None, None, None))
  if n < num_components:
    raise ValueError(
        f"x has {n} points but num_components={num_components}: a mixture needs at least as many "
        "points as components. Use fewer components or more data.")
  sharding.check_sample_weight(sample_weight, n)
  if isinstance(init, FactorFitResult):
    _check_init(init.params, d, num_components, rank, noise)
  elif isinstance(init, FactorParams):
    _check_init(init, d, num_components, rank, noise)
  elif not isinstance(init, str) or init not in INITS:
    raise ValueError(f"Unknown init {init!r}; expected one of {', '.join(map(repr, INITS))}, "
                     "a gmm.factor.FactorParams or a gmm.factor.FactorFitResult to continue.")
  elif fixed:  # as gmm.fit: a named initialisation leaves nothing meaningful to freeze
    raise ValueError(f"fixed={fixed} keeps fields at the values you start from: pass them as "
                     "init=gmm.factor.FactorParams(...) (or a FactorFitResult).")
  x, w, placement, dtype = mixture.place_rows(x, sample_weight, num_components, placement)
  if (w is not None and _checks.is_concrete(w) and not sharding.is_global(w)
      and isinstance(init, str) and init != "random"
      and int(np.count_nonzero(np.asarray(w))) < num_components):
    raise ValueError(f"Only {int(np.count_nonzero(np.asarray(w)))} points have positive "
                     f"sample_weight, fewer than num_components={num_components}.")
  chunk = _checks.check_positive_int(chunk_size, "chunk_size") if chunk_size else (
      mixture.default_chunk_size(n, num_components, d))
  family = FactorFamily(noise, rank, jnp.asarray(reg_covar, dtype))
  result = FactorFitResult(*mixture.fit_arrays(
      family, key, x, w, num_components, init=init, n_init=n_init, max_iter=max_iter, tol=tol,
      chunk_size=chunk, placement=placement, fixed=fixed))
  if _checks.is_concrete(result.n_iter) and not all(  # on the host: no program per leaf shape
      np.all(np.isfinite(np.asarray(jax.device_get(a)))) for a in jax.tree.leaves(result.params)):
    raise ValueError("The mixture of factor analysers produced non-finite parameters (a "
                     "component collapsed onto too few points). Increase reg_covar or reduce "
                     "num_components or rank.")
  return result

