r"""The variational Bayesian Gaussian mixture (Bishop, PRML 10.2; scikit-learn's
``BayesianGaussianMixture``), on lvmjax's mixture machinery.

The mixture weights get a Dirichlet-distribution prior :math:`\pi \sim \mathrm{Dir}(\alpha_0)`
or a Dirichlet-process prior in its truncated stick-breaking form
(:math:`\pi_k = v_k \prod_{j<k} (1 - v_j)`, :math:`v_k \sim \mathrm{Beta}(1, \alpha_0)`); the
means and precisions get Gaussian-Wishart priors
:math:`\mu_k \mid \Lambda_k \sim \mathcal{N}(m_0, (\beta_0 \Lambda_k)^{-1})`,
:math:`\Lambda_k \sim \mathcal{W}(W_0, \nu_0)` with :math:`W_0^{-1}` = ``covariance_prior``. The
factorised posterior :math:`q(z)\,q(\pi)\,q(\mu, \Lambda)` is fitted by coordinate ascent. Its
E-step is the GMM's E-step with log-weights

.. math::

  \log \rho_{nk} = \mathbb{E}[\log \pi_k] + \tfrac12 \mathbb{E}[\log |\Lambda_k|]
    - \tfrac{D}{2 \beta_k} - \tfrac{\nu_k}{2} (x_n - m_k)^\top W_k (x_n - m_k)
    - \tfrac{D}{2} \log 2\pi, \qquad r_{nk} = \rho_{nk} / \textstyle\sum_j \rho_{nj},

.. math::

  \mathbb{E}[\log |\Lambda_k|] = \sum_{i=1}^{D} \psi\!\left(\tfrac{\nu_k + 1 - i}{2}\right)
    + D \log 2 + \log |W_k|, \qquad
  \mathbb{E}[\log \pi_k] = \psi(\alpha_k) - \psi(\textstyle\sum_j \alpha_j)
  \ \text{or}\ \psi(a_k) - \psi(a_k + b_k) + \textstyle\sum_{j<k} \psi(b_j) - \psi(a_j + b_j),

so it runs on the GMM's additive statistics :math:`N_k, \sum r x, \sum r x x^\top`
(:class:`lvmjax.gmm.em.GaussianFamily`, with the point estimate
:math:`\Sigma_k = (\nu_k W_k)^{-1}`, scikit-learn's ``covariances_``), chunked, weighted, over
devices and streams by :mod:`lvmjax.mixture`. The M-step is closed-form on the sums
(:math:`\bar x_k`, :math:`S_k` with ``reg_covar`` on the diagonal, as scikit-learn's):

.. math::

  \alpha_k = \alpha_0 + N_k \ \text{or}\ (a_k, b_k) = (1 + N_k,\ \alpha_0 + \textstyle\sum_{j>k} N_j),
  \quad \beta_k = \beta_0 + N_k, \quad m_k = (\beta_0 m_0 + N_k \bar x_k) / \beta_k,

.. math::

  \nu_k = \nu_0 + N_k, \quad W_k^{-1} = W_0^{-1} + N_k S_k
    + \tfrac{\beta_0 N_k}{\beta_k} (\bar x_k - m_0)(\bar x_k - m_0)^\top

("tied" pools the components, "diag" and "spherical" keep diagonals, as scikit-learn does). The
loop records the variational lower bound of each iteration, scikit-learn's simplified form (its
constant terms dropped), evaluated after the M-step from the E-step's responsibilities:

.. math::

  \mathcal{L} = -\sum_n s_n \sum_k r_{nk} \log r_{nk} - \sum_k \log B(W_k, \nu_k)
    - \log C(\alpha) - \tfrac{D}{2} \sum_k \log \beta_k,

per unit sample weight (``lower_bounds``; scikit-learn's ``lower_bound_`` is the sum,
:math:`\mathcal{L}`, which ``lvmjax.sklearn.BayesianGaussianMixture`` reports). It never
decreases, and the fit stops when it changes by less than ``tol``. Components whose expected
share of the data :math:`N_k / \sum_j N_j` falls below ``weight_threshold`` are reported as
negligible; the others are the effective components.

References:
  Bishop, Pattern Recognition and Machine Learning (2006), sections 10.2 and 10.4.
  Blei and Jordan, Variational inference for Dirichlet process mixtures, Bayesian Analysis
  1(1), 2006.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from lvmjax.gmm import bayesian
  >>> x = jnp.concatenate([jax.random.normal(jax.random.key(0), (200, 2)) - 5,
  ...                      jax.random.normal(jax.random.key(1), (200, 2)) + 5])
  >>> result = bayesian.fit(jax.random.key(2), x, 6, weight_concentration_prior=1e-3)
  >>> int(result.effective_components)
  2
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy import special
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import linalg
from lvmjax import mixture
from lvmjax import sharding
from lvmjax.gmm import em
from lvmjax.gmm import model
from lvmjax.gmm.model import GMMParams
from lvmjax.types import Data, DataLike, Key, Labels, LogDensity, LogJoint, Responsibilities
from lvmjax.types import WeightsLike

__all__ = [
    "WEIGHT_PRIOR_TYPES", "INITS", "BayesianGMMParams", "BayesianFamily", "BayesianFitResult",
    "VBStats", "prior", "params_from_responsibilities", "fit", "fit_streaming", "expected_weights", "expected_log_weights",
    "log_joint", "score_samples", "posterior", "map_latent", "to_gmm_params", "sample",
    "lower_bound",
]

WEIGHT_PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
INITS = em.INITS


@struct.dataclass
class BayesianGMMParams:
  """The variational posterior :math:`q(\\pi)\\,q(\\mu, \\Lambda)` of a Bayesian GMM.

  Attributes:
    weight_concentration: (K,) Dirichlet parameters :math:`\\alpha_k`
      ("dirichlet_distribution"), or (2, K) Beta parameters :math:`(a_k, b_k)` of the sticks
      ("dirichlet_process"; scikit-learn's tuple stacked).
    mean_precision: (K,) :math:`\\beta_k`.
    means: (K, D) :math:`m_k`.
    degrees_of_freedom: (K,) :math:`\\nu_k`, a scalar for "tied".
    covariances: :math:`(\\nu_k W_k)^{-1}` in scikit-learn's layout ("full" (K, D, D), "tied"
      (D, D), "diag" (K, D), "spherical" (K,)).
    covariance_type: static.
    weight_concentration_prior_type: "dirichlet_process" or "dirichlet_distribution" (static).
  """
  weight_concentration: jax.Array
  mean_precision: jax.Array
  means: jax.Array
  degrees_of_freedom: jax.Array
  covariances: jax.Array
  covariance_type: str = struct.field(pytree_node=False, default="full")
  weight_concentration_prior_type: str = struct.field(pytree_node=False,
                                                      default="dirichlet_process")


class VBStats(NamedTuple):
  """The E-step's additive statistics: the GMM's (:class:`lvmjax.gmm.SuffStats`, moments about
  the E-step's means :math:`m_k`) plus the weighted entropy of the responsibilities.

  Attributes:
    counts, sum_x, sum_xx, log_likelihood, total_weight: as ``gmm.SuffStats``
      (``log_likelihood`` is :math:`\\sum_n s_n \\log \\sum_k \\rho_{nk}` up to a constant).
    entropy: :math:`-\\sum_n s_n \\sum_k r_{nk} \\log r_{nk}`.
  """
  counts: jax.Array
  sum_x: jax.Array
  sum_xx: jax.Array
  log_likelihood: jax.Array
  total_weight: jax.Array
  entropy: jax.Array


class BayesianFitResult(NamedTuple):
  """What :func:`fit` returns.

  Attributes:
    params: the fitted :class:`BayesianGMMParams` (of the best restart).
    lower_bounds: the variational lower bound per unit sample weight at each iteration, (n_iter,)
      (length ``max_iter``, NaN-padded, under ``jit``/``vmap``).
    n_iter: iterations run.
    converged: whether the lower bound changed by less than ``tol``.
    lower_bound: the last lower bound (-inf when no iteration ran); the best restart has the
      largest.
    weights: (K,) expected mixing weights :math:`\\mathbb{E}_q[\\pi_k]`.
    effective_components: the number of components whose share of the data,
      :math:`N_k / \\sum_j N_j` (:math:`N_k = \\beta_k - \\beta_0`, the expected number of points),
      is at least ``weight_threshold``.
    negligible: (K,) bool, the components below it (switched off by the prior). (Under a
      Dirichlet process an unused component keeps an expected weight near 1/N, since its stick is
      Beta(1 + N_k, ...); its share of the data is what goes to 0.)
  """
  params: BayesianGMMParams
  lower_bounds: jax.Array
  n_iter: jax.Array
  converged: jax.Array
  lower_bound: jax.Array
  weights: jax.Array
  effective_components: jax.Array
  negligible: jax.Array


# --------------------------------------------------------------------------------------------
# Expectations under q.


def expected_log_weights(params: BayesianGMMParams) -> jax.Array:
  r"""(K,) :math:`\mathbb{E}_q[\log \pi_k]` (Dirichlet, or the stick-breaking sum)."""
  conc = params.weight_concentration
  if params.weight_concentration_prior_type == "dirichlet_process":
    a, b = conc[0], conc[1]
    digamma_sum = special.digamma(a + b)
    stick = special.digamma(b) - digamma_sum
    before = jnp.concatenate([jnp.zeros((1,), conc.dtype), jnp.cumsum(stick)[:-1]])
    return special.digamma(a) - digamma_sum + before
  return special.digamma(conc) - special.digamma(jnp.sum(conc))


def expected_weights(params: BayesianGMMParams) -> jax.Array:
  r"""(K,) :math:`\mathbb{E}_q[\pi_k]`, normalised (scikit-learn's ``weights_``)."""
  conc = params.weight_concentration
  if params.weight_concentration_prior_type == "dirichlet_process":
    a, b = conc[0], conc[1]
    rest = b / (a + b)
    w = a / (a + b) * jnp.concatenate([jnp.ones((1,), conc.dtype), jnp.cumprod(rest[:-1])])
  else:
    w = conc
  return w / jnp.sum(w)


def _log_rho_offsets(params: BayesianGMMParams) -> jax.Array:
  r"""(K,) what the E-step adds to :math:`\log \mathcal{N}(x; m_k, \Sigma_k)`:
  :math:`\mathbb{E}[\log \pi_k] - \frac D2 \log \nu_k + \frac12 (D \log 2 +
  \sum_i \psi(\frac{\nu_k - i}{2})) - \frac{D}{2\beta_k}`."""
  d = params.means.shape[-1]
  nu = params.degrees_of_freedom
  i = jnp.arange(d, dtype=params.means.dtype)
  log_lambda = d * math.log(2.0) + jnp.sum(special.digamma(0.5 * (nu[..., None] - i)), axis=-1)
  return (expected_log_weights(params) - 0.5 * d * jnp.log(nu)
          + 0.5 * (log_lambda - d / params.mean_precision))


_log_rho_offsets_jit = jax.jit(_log_rho_offsets)  # one program, not one per digamma, when eager


def to_gmm_params(params: BayesianGMMParams) -> GMMParams:
  r"""The point estimate :math:`(\mathbb{E}[\pi], m, (\nu W)^{-1})` as ``gmm.GMMParams``
  (scikit-learn's ``weights_``, ``means_``, ``covariances_``; what ``sample`` draws from)."""
  return GMMParams(expected_weights(params), params.means, params.covariances,
                   params.covariance_type)


_to_gmm_params_jit = jax.jit(to_gmm_params)


def log_joint(params: BayesianGMMParams, x: ArrayLike) -> LogJoint:
  r"""(..., K) the E-step's :math:`\log \rho_{nk}` (scikit-learn's weighted log-probabilities).

  Args:
    params: the variational posterior.
    x: points (..., D).
  """
  return _reduce(params, x, None)


def _reduce(params: BayesianGMMParams, x: ArrayLike, reduce: str | None,
            log_weights: jax.Array | None = None) -> jax.Array:
  r""":func:`log_joint` reduced over k (``gmm.model.reduce_components``): the Gaussian densities
  of ``gmm``'s checked, jitted log-joint plus ``log_weights`` (default :math:`\log \rho`'s
  offsets)."""
  k = np.shape(params.means)[0]
  dtype = np.dtype(params.means.dtype)
  uniform = GMMParams(np.full((k,), 1.0 / k, dtype), params.means, params.covariances,
                      params.covariance_type)  # checked there; its weights are not used
  if log_weights is None:
    log_weights = _log_rho_offsets_jit(params)
  return model._reduce_log_joint(  # pylint: disable=protected-access
      uniform, x, None, reduce, log_weights=log_weights)


def score_samples(params: BayesianGMMParams, x: ArrayLike) -> LogDensity:
  r"""(...,) :math:`\log \sum_k \rho_{nk}` (scikit-learn's ``score_samples``)."""
  return _reduce(params, x, "logsumexp")


def posterior(params: BayesianGMMParams, x: ArrayLike) -> Responsibilities:
  r"""(..., K) the variational responsibilities :math:`r_{nk} = q(z_n{=}k)`."""
  return _reduce(params, x, "softmax")


def map_latent(params: BayesianGMMParams, x: ArrayLike) -> Labels:
  r"""(...,) :math:`\arg\max_k r_{nk}`."""
  return _reduce(params, x, "argmax")


def sample(params: BayesianGMMParams, key: Key, n: int) -> tuple[Data, Labels]:
  """n draws ``(x, z)`` from the point estimate :func:`to_gmm_params` (as scikit-learn's)."""
  return model.sample(_to_gmm_params_jit(params), key, n)


def _log_det_cov(params: BayesianGMMParams) -> jax.Array:
  """log det of each covariance, (K,) (a scalar for "tied")."""
  cov = params.covariances
  d = params.means.shape[-1]
  if params.covariance_type in ("full", "tied"):
    chol = linalg.cholesky(cov)
    return 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
  if params.covariance_type == "diag":
    return jnp.sum(jnp.log(cov), axis=-1)
  return d * jnp.log(cov)


def lower_bound(params: BayesianGMMParams, entropy: ArrayLike) -> jax.Array:
  r"""scikit-learn's variational lower bound (constant terms dropped), total over the data.

  .. math::

    \mathcal{L} = H[r] - \sum_k \log B(W_k, \nu_k) - \log C(\alpha)
      - \tfrac{D}{2} \sum_k \log \beta_k, \quad
    \log B(W, \nu) = -\tfrac{\nu}{2} \log |W| - \tfrac{\nu D}{2} \log 2
      - \sum_{i<D} \log \Gamma(\tfrac{\nu - i}{2})

  ("tied": K times the one Wishart), :math:`\log C` the Dirichlet's (or minus the sum of the
  sticks' log Beta functions). Valid right after the M-step from the responsibilities ``r``.

  Args:
    params: the parameters after the M-step.
    entropy: :math:`-\sum_n s_n \sum_k r_{nk} \log r_{nk}` of the E-step before it.
  """
  k, d = params.means.shape
  nu = params.degrees_of_freedom
  # log det of (nu W)^{-1} gives log det W = -log det(cov) - D log nu.
  log_det_prec_chol = -0.5 * _log_det_cov(params) - 0.5 * d * jnp.log(nu)
  i = jnp.arange(d, dtype=params.means.dtype)
  log_wishart_norm = -(nu * log_det_prec_chol + nu * d * 0.5 * math.log(2.0)
                       + jnp.sum(special.gammaln(0.5 * (nu[..., None] - i)), axis=-1))
  log_wishart = (k * log_wishart_norm if params.covariance_type == "tied"
                 else jnp.sum(log_wishart_norm))
  conc = params.weight_concentration
  if params.weight_concentration_prior_type == "dirichlet_process":
    log_norm_weight = -jnp.sum(special.betaln(conc[0], conc[1]))
  else:
    log_norm_weight = special.gammaln(jnp.sum(conc)) - jnp.sum(special.gammaln(conc))
  return (entropy - log_wishart - log_norm_weight
          - 0.5 * d * jnp.sum(jnp.log(params.mean_precision)))


# --------------------------------------------------------------------------------------------
# The family.


class _Prepared(NamedTuple):
  """What one E-step computes once: the GMM E-step's own, and what the entropy needs."""
  gauss: Any            # GaussianFamily.prepare of the point-estimate GMM
  offset: jax.Array     # (K,) log w_k - D/2 log 2pi - 1/2 log det Sigma_k of that GMM
  precision: jax.Array  # Sigma^{-1}: (K, D, D), (D, D), (K, D) or (K,)


@struct.dataclass
class BayesianFamily(mixture.MixtureFamily):
  r"""The variational Bayesian GMM as a :class:`lvmjax.mixture.MixtureFamily`, priors included.

  Build one with :func:`prior` (scikit-learn's defaults from the data). Its E-step is
  :class:`lvmjax.gmm.em.GaussianFamily`'s on the point estimate with the log-weights
  :math:`\log \rho` adds; ``finalize`` adds the responsibilities' entropy (linear in the sums);
  ``objective`` is the lower bound per unit weight.

  Attributes:
    covariance_type: "full", "tied", "diag" or "spherical" (static).
    weight_concentration_prior_type: "dirichlet_process" or "dirichlet_distribution" (static).
    weight_concentration_prior: :math:`\alpha_0` (traced, like the fields below).
    mean_precision_prior: :math:`\beta_0`.
    mean_prior: (D,) :math:`m_0`.
    degrees_of_freedom_prior: :math:`\nu_0 > D - 1`.
    covariance_prior: :math:`W_0^{-1}`: (D, D) for "full"/"tied", (D,) "diag", scalar
      "spherical".
    reg_covar: added to the diagonal of the data covariances :math:`S_k`.
  """
  covariance_type: str = struct.field(pytree_node=False, default="full")
  weight_concentration_prior_type: str = struct.field(pytree_node=False,
                                                      default="dirichlet_process")
  weight_concentration_prior: Any = 1.0
  mean_precision_prior: Any = 1.0
  mean_prior: Any = None
  degrees_of_freedom_prior: Any = None
  covariance_prior: Any = None
  reg_covar: Any = 1e-6

  def _gauss(self) -> em.GaussianFamily:
    return em.GaussianFamily(self.covariance_type, self.reg_covar)

  def log_weights(self, params: BayesianGMMParams) -> jax.Array:
    """(K,) the log-weight part of :math:`\\log \\rho_{nk}`."""
    return _log_rho_offsets(params)

  def log_component(self, params: BayesianGMMParams, x: Data) -> jax.Array:
    """(n, K) :math:`\\log \\mathcal{N}(x_n; m_k, (\\nu_k W_k)^{-1})`."""
    k = np.shape(params.means)[0]
    return _reduce(params, x, None, np.zeros((k,), np.dtype(params.means.dtype)))

  def prepare(self, params: BayesianGMMParams) -> _Prepared:
    log_w = _log_rho_offsets(params)
    log_w = log_w - jax.nn.logsumexp(log_w)
    point = GMMParams(jnp.exp(log_w), params.means, params.covariances, self.covariance_type)
    d = params.means.shape[-1]
    cov = params.covariances
    if self.covariance_type in ("full", "tied"):
      chol = linalg.cholesky(cov)
      eye = jnp.broadcast_to(jnp.eye(d, dtype=cov.dtype), chol.shape)
      chol_inv = linalg.triangular_solve(chol, eye, left_side=True, lower=True)
      precision = jnp.swapaxes(chol_inv, -1, -2) @ chol_inv
    else:
      precision = 1.0 / cov
    offset = log_w - 0.5 * d * math.log(2 * math.pi) - 0.5 * _log_det_cov(params)
    return _Prepared(self._gauss().prepare(point), offset, precision)

  def chunk_stats(self, prepared: _Prepared, x: Data, w: jax.Array) -> VBStats:
    s = self._gauss().chunk_stats(prepared.gauss, x, w)
    return VBStats(*s, jnp.zeros((), s.log_likelihood.dtype))

  def finalize(self, prepared: _Prepared, stats: VBStats) -> VBStats:
    r"""The GMM's ``finalize``, then :math:`H \mathrel{+}= \sum s \log \sum_k \rho
    - \sum_k N_k o_k + \frac12 \sum_k \mathrm{tr}(\Sigma_k^{-1} S^{(2)}_k)` (linear in the
    sums), the entropy since :math:`\log r_{nk} = o_k - \frac12 \|x_n - m_k\|^2_{\Sigma_k^{-1}}
    - \log \sum_j \rho_{nj}`."""
    g = self._gauss().finalize(prepared.gauss, em.SuffStats(*stats[:5]))
    precision = prepared.precision
    if self.covariance_type == "spherical":  # sum_xx holds diagonals (K, D)
      precision = precision[:, None]
    maha = jnp.sum(precision * g.sum_xx)
    entropy = g.log_likelihood - jnp.sum(g.counts * prepared.offset) + 0.5 * maha
    return VBStats(*g, stats.entropy + entropy)

  def m_step(self, params: BayesianGMMParams | None, stats: VBStats) -> BayesianGMMParams:
    """The closed-form update of :math:`q(\\pi)\\,q(\\mu, \\Lambda)` from the statistics."""
    centres = GMMParams(None, params.means, None, self.covariance_type)
    counts = stats.counts + 10 * jnp.finfo(stats.counts.dtype).eps
    g = em.m_step(centres, em.SuffStats(*stats[:5]), self.reg_covar)
    return self.update(counts, g.means, g.covariances)

  def update(self, nk: jax.Array, xk: jax.Array, sk: jax.Array) -> BayesianGMMParams:
    r"""The variational parameters from :math:`N_k` (with scikit-learn's 10 eps),
    :math:`\bar x_k` and :math:`S_k` (``reg_covar`` included), in scikit-learn's formulas.

    Args:
      nk: (K,) weighted counts.
      xk: (K, D) weighted means.
      sk: weighted covariances in the layout of ``covariance_type``.
    """
    k, d = xk.shape
    dtype = xk.dtype
    alpha0 = jnp.asarray(self.weight_concentration_prior, dtype)
    beta0 = jnp.asarray(self.mean_precision_prior, dtype)
    m0 = jnp.asarray(self.mean_prior, dtype)
    nu0 = jnp.asarray(self.degrees_of_freedom_prior, dtype)
    psi0 = jnp.asarray(self.covariance_prior, dtype)
    if self.weight_concentration_prior_type == "dirichlet_process":
      tail = jnp.cumsum(nk[::-1])[::-1]  # sum_{j >= k}
      after = jnp.concatenate([tail[1:], jnp.zeros((1,), dtype)])
      conc = jnp.stack([1.0 + nk, alpha0 + after])
    else:
      conc = alpha0 + nk
    beta = beta0 + nk
    means = (beta0 * m0[None, :] + nk[:, None] * xk) / beta[:, None]
    diff = xk - m0[None, :]
    cov_type = self.covariance_type
    if cov_type == "full":
      nu = nu0 + nk
      cov = (psi0[None] + nk[:, None, None] * sk
             + (nk * beta0 / beta)[:, None, None] * diff[:, :, None] * diff[:, None, :])
      cov = cov / nu[:, None, None]
    elif cov_type == "tied":
      nu = nu0 + jnp.sum(nk) / k
      cov = (psi0 + sk * jnp.sum(nk) / k
             + beta0 / k * jnp.einsum("k,kd,ke->de", nk / beta, diff, diff))
      cov = cov / nu
    elif cov_type == "diag":
      nu = nu0 + nk
      cov = psi0[None, :] + nk[:, None] * (sk + (beta0 / beta)[:, None] * jnp.square(diff))
      cov = cov / nu[:, None]
    else:
      nu = nu0 + nk
      cov = psi0 + nk * (sk + beta0 / beta * jnp.mean(jnp.square(diff), axis=1))
      cov = cov / nu
    return BayesianGMMParams(conc, beta, means, nu, cov, cov_type,
                             self.weight_concentration_prior_type)

  def objective(self, params: BayesianGMMParams, stats: VBStats) -> jax.Array:
    """The lower bound per unit sample weight (:func:`lower_bound` / :math:`\\sum_n s_n`)."""
    return lower_bound(params, stats.entropy) / stats.total_weight

  def initialize(self, key: Key, rows: mixture.Rows, num_components: int, init: str,
                 shard: sharding.Shard | None = None) -> BayesianGMMParams:
    """The GMM's initialisations (responsibilities of ``init``), then :meth:`update`."""
    g = em._initialize(key, rows, num_components, self.covariance_type, init,  # pylint: disable=protected-access
                       self.reg_covar, shard)
    eps = jnp.finfo(rows.x_chunks.dtype).eps
    total = sharding.psum(jnp.sum(rows.w_chunks), shard) + 10 * num_components * eps
    return self.update(g.weights * total, g.means, g.covariances)


# --------------------------------------------------------------------------------------------
# Priors and checks.


@jax.jit
def _moments(x, w):
  """Weighted mean (D,) and frequency-weighted covariance (D, D) (divisor sum(w) - 1)."""
  total = jnp.sum(w)
  mean = (w @ x) / total
  xc = x - mean
  cov = (xc * w[:, None]).T @ xc / (total - 1)
  return mean, cov


def prior(x: DataLike | None, num_features: int | None = None, *, num_components: int,
          covariance_type: str = "full",
          weight_concentration_prior_type: str = "dirichlet_process",
          weight_concentration_prior: float | None = None,
          mean_precision_prior: float | None = None, mean_prior: ArrayLike | None = None,
          degrees_of_freedom_prior: float | None = None,
          covariance_prior: ArrayLike | None = None, reg_covar: float = 1e-6,
          sample_weight: WeightsLike | None = None, dtype: Any = None) -> BayesianFamily:
  r"""A :class:`BayesianFamily` with scikit-learn's defaults for the priors left None.

  Defaults: :math:`\alpha_0 = 1/K`, :math:`\beta_0 = 1`, :math:`m_0` the (weighted) mean of x,
  :math:`\nu_0 = D`, :math:`W_0^{-1}` the (frequency-weighted, unbiased) covariance of x: full
  for "full"/"tied", its diagonal for "diag", the diagonal's mean for "spherical".

  Args:
    x: (N, D) data for the defaults of ``mean_prior`` and ``covariance_prior`` (None when both
      are given).
    num_features: D when x is None.
    num_components: K.
    covariance_type: as :func:`fit`.
    weight_concentration_prior_type: as :func:`fit`.
    weight_concentration_prior: as :func:`fit`.
    mean_precision_prior: as :func:`fit`.
    mean_prior: as :func:`fit`.
    degrees_of_freedom_prior: as :func:`fit`.
    covariance_prior: as :func:`fit`.
    reg_covar: as :func:`fit`.
    sample_weight: optional (N,) weights of x.
    dtype: float dtype of the priors (default that of x, else float32).

  Returns:
    The family.

  Raises:
    ValueError: a prior of the wrong shape or value, or defaults needed without data.
  """
  num_components = _checks.check_positive_int(num_components, "num_components")
  _checks.check_choice(covariance_type, "covariance_type", model.COVARIANCE_TYPES)
  _checks.check_choice(weight_concentration_prior_type, "weight_concentration_prior_type",
                       WEIGHT_PRIOR_TYPES)
  reg_covar = _checks.check_nonnegative(reg_covar, "reg_covar")
  if x is not None:
    num_features = int(np.shape(x)[1])
    if dtype is None:
      dtype = jnp.result_type(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype, float)
  if num_features is None:
    raise ValueError("prior needs x or num_features.")
  dtype = jnp.dtype(dtype or jnp.float32)
  d = num_features

  def positive(value, name, default):
    if value is None:
      return default
    v = float(value)
    if not np.isfinite(v) or v <= 0:
      raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return v

  alpha0 = positive(weight_concentration_prior, "weight_concentration_prior",
                    1.0 / num_components)
  beta0 = positive(mean_precision_prior, "mean_precision_prior", 1.0)
  if degrees_of_freedom_prior is None:
    nu0 = float(d)
  else:
    nu0 = float(degrees_of_freedom_prior)
    if not np.isfinite(nu0) or nu0 <= d - 1:
      raise ValueError(f"degrees_of_freedom_prior must be greater than D - 1 = {d - 1}, got "
                       f"{degrees_of_freedom_prior!r}.")
  moments = None
  if (mean_prior is None or covariance_prior is None):
    if x is None:
      raise ValueError("mean_prior and covariance_prior default to the data's mean and "
                       "covariance: pass x, or give both.")
    xj = jnp.asarray(x, dtype) if not sharding.is_global(x) else x.astype(dtype)
    wj = (jnp.ones((xj.shape[0],), dtype) if sample_weight is None
          else jnp.asarray(sample_weight, dtype))
    if _checks.is_concrete(wj) and float(jnp.sum(wj)) <= 1:
      raise ValueError("The default covariance_prior is the data's unbiased covariance, which "
                       "needs a total sample weight > 1; pass covariance_prior.")
    moments = _moments(xj, wj)
  if mean_prior is None:
    m0 = moments[0]
  else:
    m0 = np.asarray(mean_prior, dtype=np.float64)
    if m0.shape != (d,) or not np.all(np.isfinite(m0)):
      raise ValueError(f"mean_prior must be a finite vector of shape ({d},), got shape "
                       f"{m0.shape}.")
  if covariance_prior is None:
    cov = moments[1]
    psi0 = {"full": cov, "tied": cov, "diag": jnp.diagonal(cov),
            "spherical": jnp.mean(jnp.diagonal(cov))}[covariance_type]
  else:
    psi0 = np.asarray(covariance_prior, dtype=np.float64)
    if covariance_type in ("full", "tied"):
      if psi0.shape != (d, d):
        raise ValueError(f"covariance_prior for covariance_type={covariance_type!r} must have "
                         f"shape ({d}, {d}), got {psi0.shape}.")
      if not (np.all(np.isfinite(psi0)) and np.allclose(psi0, psi0.T)
              and np.all(np.linalg.eigvalsh(psi0) > 0)):
        raise ValueError("covariance_prior must be symmetric and positive definite.")
    elif covariance_type == "diag":
      if psi0.shape != (d,) or not np.all(np.isfinite(psi0)) or np.any(psi0 <= 0):
        raise ValueError(f"covariance_prior for 'diag' must be a positive vector of shape "
                         f"({d},), got shape {psi0.shape}.")
    elif psi0.shape != () or not np.isfinite(psi0) or psi0 <= 0:
      raise ValueError(f"covariance_prior for 'spherical' must be a number > 0, got "
                       f"{covariance_prior!r}.")
  arr = lambda a: jnp.asarray(a, dtype)  # pylint: disable=unnecessary-lambda-assignment
  return BayesianFamily(covariance_type, weight_concentration_prior_type, arr(alpha0), arr(beta0),
                        arr(m0), arr(nu0), arr(psi0), arr(reg_covar))


def _check_init(init: BayesianGMMParams, family: BayesianFamily, num_components: int,
                num_features: int) -> None:
  if (init.covariance_type != family.covariance_type
      or init.weight_concentration_prior_type != family.weight_concentration_prior_type):
    raise ValueError(
        f"init is of covariance_type {init.covariance_type!r} with prior type "
        f"{init.weight_concentration_prior_type!r}, but the fit asks for "
        f"{family.covariance_type!r} and {family.weight_concentration_prior_type!r}.")
  k, d = num_components, num_features
  dp = family.weight_concentration_prior_type == "dirichlet_process"
  tied = family.covariance_type == "tied"
  shapes = {"weight_concentration": (2, k) if dp else (k,), "mean_precision": (k,),
            "means": (k, d), "degrees_of_freedom": () if tied else (k,),
            "covariances": model.covariance_shape(family.covariance_type, k, d)}
  for name, shape in shapes.items():
    got = np.shape(getattr(init, name))
    if got != shape:
      raise ValueError(f"init.{name} must have shape {shape} for K={k}, D={d}, got {got}.")


def params_from_responsibilities(family: BayesianFamily, x: DataLike, resp: ArrayLike,
                                 sample_weight: WeightsLike | None = None) -> BayesianGMMParams:
  """The variational parameters of one M-step from given responsibilities (scikit-learn's
  ``_initialize(X, resp)``): :math:`N_k = \\sum_n s_n r_{nk} + 10\\,\\mathrm{eps}`, then
  :meth:`BayesianFamily.update`.

  Args:
    family: the priors.
    x: (N, D) data.
    resp: (N, K) responsibilities.
    sample_weight: optional (N,) weights.

  Returns:
    :class:`BayesianGMMParams` in the dtype of x.
  """
  x, w = mixture.as_rows(x, sample_weight)
  r = jnp.asarray(resp, x.dtype)
  if r.ndim != 2 or r.shape[0] != x.shape[0]:
    raise ValueError(f"resp must have shape (N, K) with N={x.shape[0]}, got {r.shape}.")
  k = r.shape[1]
  g = em.params_from_responsibilities(x[None], w[None], lambda i, xc: r, k,
                                      family.covariance_type, family.reg_covar)
  nk = w @ r + 10 * jnp.finfo(x.dtype).eps
  return family.update(nk, g.means, g.covariances)


# --------------------------------------------------------------------------------------------
# The fit.


def _result(r: Any, family: BayesianFamily, weight_threshold: float) -> BayesianFitResult:
  # The posterior's share of the data, N_k / sum_j N_j with N_k = beta_k - beta_0: the expected
  # weight of a dead stick stays near 1/N (its Beta(1 + N_k, ...) keeps the 1), its share does not.
  counts = jnp.maximum(r.params.mean_precision - family.mean_precision_prior, 0)
  negligible = counts < weight_threshold * jnp.sum(counts)
  return BayesianFitResult(r.params, r.log_likelihood, r.n_iter, r.converged, r.lower_bound,
                           expected_weights(r.params), jnp.sum(~negligible), negligible)


def _as_mixture_result(r: BayesianFitResult) -> mixture.MixtureFitResult:
  return mixture.MixtureFitResult(r.params, r.lower_bounds, r.n_iter, r.converged, r.lower_bound)


def fit(key: Key, x: DataLike, num_components: int, covariance_type: str = "full", *,
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None, mean_prior: ArrayLike | None = None,
        degrees_of_freedom_prior: float | None = None, covariance_prior: ArrayLike | None = None,
        init: str | BayesianGMMParams | BayesianFitResult = "kmeans", n_init: int = 1,
        max_iter: int = 100, tol: float = 1e-5, reg_covar: float = 1e-6,
        sample_weight: WeightsLike | None = None, chunk_size: int | None = None,
        mesh: jax.sharding.Mesh | None = None, axis_name: str | None = None,
        fixed: tuple[str, ...] = (), weight_threshold: float = 1e-3) -> BayesianFitResult:
  r"""Fits a variational Bayesian Gaussian mixture, in one compiled call.

  :func:`lvmjax.mixture.fit_arrays` of :func:`prior`'s :class:`BayesianFamily`: chunked E-steps,
  sample weights, ``n_init`` restarts as one ``vmap`` (the largest final lower bound wins),
  meshes with one ``psum`` per iteration. The iterations, priors, ``reg_covar`` and
  initialisations are scikit-learn's ``BayesianGaussianMixture``'s; ``tol`` applies to the lower
  bound per unit sample weight (scikit-learn's to the sum).

  Args:
    key: PRNG key for the initialisation.
    x: (N, D) data; float32 unless float64 with x64 enabled.
    num_components: K, the truncation: the prior switches surplus components off.
    covariance_type: "full", "tied", "diag" or "spherical".
    weight_concentration_prior_type: "dirichlet_process" (stick-breaking) or
      "dirichlet_distribution".
    weight_concentration_prior: :math:`\alpha_0 > 0` (default 1/K); small values favour few
      components.
    mean_precision_prior: :math:`\beta_0 > 0` (default 1).
    mean_prior: (D,) :math:`m_0` (default the mean of x).
    degrees_of_freedom_prior: :math:`\nu_0 > D - 1` (default D).
    covariance_prior: :math:`W_0^{-1}` (default the covariance of x; shapes in :func:`prior`).
    init: "kmeans", "k-means++", "random", "random_from_data" (responsibilities, then one
      M-step, as scikit-learn), a :class:`BayesianGMMParams`, or a :class:`BayesianFitResult`
      to continue.
    n_init: restarts.
    max_iter: the most iterations (0 returns the initial parameters).
    tol: convergence threshold on the change of the lower bound per unit sample weight
      (scikit-learn's ``tol`` applies to the sum: its default 1e-3 is 1e-3 / N here). Merging
      split components is slow, so a loose ``tol`` can stop before surplus components die.
    reg_covar: added to the diagonal of the data covariances :math:`S_k`.
    sample_weight: optional (N,) non-negative weights (integer weights equal repeated rows).
    chunk_size: rows per E-step chunk.
    mesh, axis_name: split the rows over a mesh's axis (see ``gmm.fit``).
    fixed: fields of :class:`BayesianGMMParams` kept at their initial values, bit for bit
      (after each M-step they are put back; the recorded bound is then the same formula at
      those parameters, no longer guaranteed monotone).
    weight_threshold: components with a smaller share of the data are reported as negligible.

  Returns:
    :class:`BayesianFitResult`.

  Raises:
    ValueError: bad input (see the message), or non-finite fitted parameters.
  """
  _checks.check_fit_inputs(key, x)
  placement = sharding.mesh_of(x, mesh, axis_name)
  sharding.check_data(x)
  n, d = np.shape(x)
  num_components, n_init, max_iter, tol, reg_covar = em.check_fit_options(
      num_components, covariance_type, n_init, max_iter, tol, reg_covar)
  _checks.check_choice(weight_concentration_prior_type, "weight_concentration_prior_type",
                       WEIGHT_PRIOR_TYPES)
  weight_threshold = _checks.check_nonnegative(weight_threshold, "weight_threshold")
  if n < num_components:
    raise ValueError(f"x has {n} points but num_components={num_components}: a mixture needs "
                     "at least as many points as components. Use fewer components or more data.")
  sharding.check_sample_weight(sample_weight, n)
  x, w, placement, dtype = mixture.place_rows(x, sample_weight, num_components, placement)
  family = prior(x, num_components=num_components, covariance_type=covariance_type,
                 weight_concentration_prior_type=weight_concentration_prior_type,
                 weight_concentration_prior=weight_concentration_prior,
                 mean_precision_prior=mean_precision_prior, mean_prior=mean_prior,
                 degrees_of_freedom_prior=degrees_of_freedom_prior,
                 covariance_prior=covariance_prior, reg_covar=reg_covar, sample_weight=w,
                 dtype=dtype)
  if isinstance(init, BayesianFitResult):
    _check_init(init.params, family, num_components, d)
    init = _as_mixture_result(init)
  elif isinstance(init, BayesianGMMParams):
    _check_init(init, family, num_components, d)
  elif not isinstance(init, str) or init not in INITS:
    raise ValueError(f"Unknown init {init!r}; expected one of {', '.join(map(repr, INITS))}, "
                     "a BayesianGMMParams or a BayesianFitResult to continue.")
  chunk = _checks.check_positive_int(chunk_size, "chunk_size") if chunk_size else (
      mixture.default_chunk_size(n, num_components, d))
  result = mixture.fit_arrays(family, key, x, w, num_components, init=init, n_init=n_init,
                              max_iter=max_iter, tol=tol, chunk_size=chunk, placement=placement,
                              fixed=mixture.check_fixed(fixed))
  if _checks.is_concrete(result.n_iter):
    if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(result.params)):
      raise ValueError("The variational fit produced non-finite parameters; increase reg_covar "
                       "or the priors' strength, or scale the data.")
  return _result(result, family, weight_threshold)


def fit_streaming(family: BayesianFamily, init: BayesianGMMParams | BayesianFitResult,
                  batches: Callable, num_features: int, *, max_iter: int = 100,
                  tol: float = 1e-5, batch_size: int = 65536, chunk_size: int | None = None,
                  mesh: jax.sharding.Mesh | None = None, axis_name: str | None = None,
                  fixed: tuple[str, ...] = (), weight_threshold: float = 1e-3,
                  callback: Callable[[int, float], None] | None = None) -> BayesianFitResult:
  """The fit over data streamed in batches, one pass per iteration
  (:func:`lvmjax.mixture.fit_streaming`); equal to :func:`fit` from the same start and priors.

  Args:
    family: the priors (:func:`prior`, e.g. from a sample of the data, or given explicitly).
    init: initial parameters (e.g. ``fit(..., max_iter=0).params`` on a sample) or a result to
      continue.
    batches: a callable returning a fresh iterable of ``(x, weights or None)`` per pass.
    num_features: D.
    max_iter, tol, fixed, weight_threshold: as :func:`fit`.
    batch_size, chunk_size, mesh, axis_name, callback: as :func:`lvmjax.mixture.fit_streaming`.

  Returns:
    :class:`BayesianFitResult`.
  """
  params = init.params if isinstance(init, BayesianFitResult) else init
  k = params.means.shape[0]
  _check_init(params, family, k, num_features)
  if isinstance(init, BayesianFitResult):
    init = _as_mixture_result(init)
  result = mixture.fit_streaming(family, init, batches, num_features, max_iter=max_iter, tol=tol,
                                 batch_size=batch_size, chunk_size=chunk_size, mesh=mesh,
                                 axis_name=axis_name, callback=callback,
                                 fixed=mixture.check_fixed(fixed))
  return _result(result, family, weight_threshold)
