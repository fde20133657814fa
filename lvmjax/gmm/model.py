r"""The Gaussian mixture model as pure functions of its parameters.

.. math::

  p(z = k) = w_k, \qquad p(x \mid z = k) = \mathcal{N}(x; \mu_k, \Sigma_k), \qquad
  p(x) = \sum_k w_k \, \mathcal{N}(x; \mu_k, \Sigma_k).

Covariances are stored in scikit-learn's layouts: ``"full"`` (K, D, D), ``"tied"`` (D, D),
``"diag"`` (K, D) and ``"spherical"`` (K,). Densities are computed from the Cholesky factor
:math:`\Sigma_k = L_k L_k^\top` (log-determinant :math:`2 \sum_d \log L_{k,dd}`, Mahalanobis term
:math:`\|L_k^{-1}(x - \mu_k)\|^2` through a triangular solve); :math:`\Sigma_k^{-1}` is never formed.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax.types import Data, Key, Labels, LogDensity, LogJoint, Responsibilities
from lvmjax import linalg

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@struct.dataclass
class GMMParams:
  """Parameters of a Gaussian mixture with K components in D dimensions.

  Attributes:
    weights: (K,) mixing proportions, non-negative, summing to one.
    means: (K, D) component means.
    covariances: scikit-learn's layout for ``covariance_type``: "full" (K, D, D), "tied" (D, D),
      "diag" (K, D), "spherical" (K,).
    covariance_type: one of "full", "tied", "diag", "spherical". Static metadata, not a leaf: it
      selects the code path, so ``jax.tree.leaves(params)`` are the three arrays.
  """
  weights: jax.Array
  means: jax.Array
  covariances: jax.Array
  covariance_type: str = struct.field(pytree_node=False, default="full")

  @property
  def num_components(self) -> int:
    return self.means.shape[-2]

  @property
  def num_features(self) -> int:
    return self.means.shape[-1]


def covariance_shape(covariance_type: str, num_components: int, num_features: int) -> tuple:
  """The shape of ``covariances`` for a covariance type (scikit-learn's layout)."""
  k, d = num_components, num_features
  return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]


def check_params(params: GMMParams, num_features: int | None = None, *,
                 check_values: bool = True) -> None:
  """Raises ``ValueError`` when ``params`` is not a valid mixture.

  Shapes are always checked. When ``check_values`` and the arrays are concrete (not traced), also
  checks that weights are non-negative and sum to one, and that every covariance is finite,
  symmetric and positive definite.

  Args:
    params: the parameters to check.
    num_features: the D of the data they will be used with, if known.
    check_values: whether to inspect values (needs concrete arrays).
  """
  if not isinstance(params, GMMParams):
    raise ValueError(f"Expected a gmm.GMMParams, got {type(params).__name__}.")
  _checks.check_choice(params.covariance_type, "covariance_type", COVARIANCE_TYPES)
  w_shape, m_shape, c_shape = (np.shape(params.weights), np.shape(params.means),
                               np.shape(params.covariances))
  if len(m_shape) != 2:
    raise ValueError(f"means must have shape (K, D), got {m_shape}.")
  k, d = m_shape
  if num_features is not None and d != num_features:
    raise ValueError(
        f"The parameters have D={d} features (means shape {m_shape}) but the data has "
        f"{num_features} columns. Use parameters fitted on data with the same features.")
  if w_shape != (k,):
    raise ValueError(f"weights must have shape (K,) = ({k},) to match means {m_shape}, "
                     f"got {w_shape}.")
  expected = covariance_shape(params.covariance_type, k, d)
  if c_shape != expected:
    raise ValueError(
        f"covariances for covariance_type={params.covariance_type!r} must have shape {expected} "
        f"(scikit-learn's layout), got {c_shape}.")
  if not check_values or not all(
      _checks.is_concrete(a) for a in (params.weights, params.means, params.covariances)):
    return
  weights = np.asarray(params.weights, dtype=np.float64)
  if not np.all(np.isfinite(weights)) or np.any(weights < 0):
    raise ValueError(f"weights must be finite and non-negative, got {weights}.")
  if abs(weights.sum() - 1.0) > 1e-5:
    raise ValueError(
        f"weights must sum to one, got sum {weights.sum():.8g}. Normalise them: w / w.sum().")
  if not np.all(np.isfinite(np.asarray(params.means, dtype=np.float64))):
    raise ValueError("means contain NaN or infinite values.")
  cov = np.asarray(params.covariances, dtype=np.float64)
  if not np.all(np.isfinite(cov)):
    raise ValueError("covariances contain NaN or infinite values.")
  if params.covariance_type in ("diag", "spherical"):
    if np.any(cov <= 0):
      raise ValueError(f"{params.covariance_type} covariances must be strictly positive.")
    return
  mats = cov.reshape(-1, d, d)
  for i, c in enumerate(mats):
    if not np.allclose(c, c.T, rtol=1e-5, atol=1e-8 * max(1.0, np.abs(c).max())):
      raise ValueError(f"covariance {i} is not symmetric; use (c + c.T) / 2.")
    try:
      np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
      raise ValueError(
          f"covariance {i} is not positive definite. Add a small multiple of the identity "
          "(e.g. c + 1e-6 * np.eye(D)) or increase reg_covar.") from None


def check_init(init: GMMParams, num_features: int | None, num_components: int,
               covariance_type: str) -> None:
  """Checks initial parameters given to a fit: valid values, and the fit's D, K and type."""
  if num_features is not None:
    check_params(init, num_features)
  if init.num_components != num_components or init.covariance_type != covariance_type:
    raise ValueError(
        f"init has K={init.num_components} components of covariance_type "
        f"{init.covariance_type!r}, but the fit asks for num_components={num_components}, "
        f"covariance_type={covariance_type!r}.")


def cholesky(params: GMMParams) -> jax.Array:
  """Cholesky factors of the covariances: lower-triangular L for "full" (K, D, D) and "tied"
  (D, D); standard deviations for "diag" (K, D) and "spherical" (K,)."""
  cov = jnp.asarray(params.covariances)
  if params.covariance_type in ("full", "tied"):
    return linalg.cholesky(cov)
  return jnp.sqrt(cov)


def _diag_mahalanobis(x: jax.Array, means: jax.Array, precisions: jax.Array) -> jax.Array:
  r""":math:`m_{nk} = \sum_d (x_{nd} - \mu_{kd})^2 p_{kd}`, (N, K), as matrix products.

  .. math:: m = \tilde x^{2} P^\top - 2\, \tilde x\, (\tilde\mu \circ P)^\top
     + \mathbf 1 \big(\textstyle\sum_d \tilde\mu_{kd}^2 p_{kd}\big)^\top,
     \qquad \tilde x = x - c,\ \tilde\mu = \mu - c,

  with c the rows' mean (m does not depend on c; centring keeps the expansion's rounding small
  where the data sit far from the origin), clipped at 0. No (N, K, D) array is formed: the
  VampPrior's and VaDE's gradients through the density and the importance-sampled evaluation
  (N = 500,000 samples, K = 500, D = 50 per batch) are matrix products, 20-50x faster on a CPU
  than the difference form's broadcast and reductions.
  """
  c = lax.stop_gradient(jnp.mean(x, axis=0, keepdims=True))  # (1, D)
  xc, mc = x - c, means - c
  maha = (jnp.square(xc) @ precisions.T - 2 * xc @ (mc * precisions).T
          + jnp.sum(jnp.square(mc) * precisions, axis=-1)[None])
  return jnp.maximum(maha, 0)


def _log_gaussians(params: GMMParams, chol: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """log N(x_n; mu_k, Sigma_k) for rows x (N, D); also returns x - mu_k (N, K, D)."""
  means = jnp.asarray(params.means)
  n_features = means.shape[-1]
  diff = x[:, None, :] - means[None, :, :]  # (N, K, D)
  cov_type = params.covariance_type
  if cov_type == "full":
    # y[n,k] = L_k^{-1} (x_n - mu_k), one batched triangular solve per component.
    y = linalg.triangular_solve(
        chol, jnp.swapaxes(diff, 0, 1), left_side=False, lower=True, transpose_a=True)
    maha = jnp.sum(jnp.square(y), axis=-1).T  # (N, K)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)  # (K,)
  elif cov_type == "tied":
    flat = diff.reshape(-1, n_features)
    y = linalg.triangular_solve(chol, flat, left_side=False, lower=True, transpose_a=True)
    maha = jnp.sum(jnp.square(y), axis=-1).reshape(diff.shape[:2])
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol)))[None]
  elif cov_type == "diag":
    maha = _diag_mahalanobis(x, means, 1 / jnp.square(chol))
    half_logdet = jnp.sum(jnp.log(chol), axis=-1)
  else:  # spherical
    precisions = jnp.broadcast_to((1 / jnp.square(chol))[:, None], means.shape)
    maha = _diag_mahalanobis(x, means, precisions)
    half_logdet = n_features * jnp.log(chol)
  log_norm = -0.5 * n_features * math.log(2 * math.pi)
  return log_norm - half_logdet[None, :] - 0.5 * maha, diff


def _masked_gaussians(params: GMMParams, x: jax.Array, observed: jax.Array, *,
                      moments: bool = False) -> tuple[jax.Array, Any, Any]:
  r"""Gaussians of the observed entries of each row, and the conditional moments of the others.

  For row n with observed entries o (``observed[n]``) and missing entries m,

  .. math::

    \log \mathcal{N}(x_o; \mu_{k,o}, \Sigma_{k,oo}), \qquad
    \hat x_{nk} = \begin{pmatrix} x_o \\ \mu_{k,m} + \Sigma_{k,mo} \Sigma_{k,oo}^{-1}
    (x_o - \mu_{k,o}) \end{pmatrix}, \qquad
    C_{nk} = \begin{pmatrix} 0 & 0 \\ 0 & \Sigma_{k,mm} - \Sigma_{k,mo} \Sigma_{k,oo}^{-1}
    \Sigma_{k,om} \end{pmatrix}.

  "full" and "tied" take every row through one masked matrix, without a loop over rows or mask
  patterns: :math:`\tilde\Sigma = M \Sigma M + (I - M)`, :math:`M = \mathrm{diag}(o_n)`, is
  :math:`\Sigma_{oo}` on the observed block and the identity on the missing one, so with
  :math:`\tilde\Sigma = \tilde L \tilde L^\top` and the residual :math:`r = M(x - \mu)` (0 where
  missing), :math:`\lVert \tilde L^{-1} r\rVert^2` and :math:`\log\det\tilde\Sigma` are those of
  the observed block; with :math:`v = \tilde L^{-1} r` and :math:`B = \tilde L^{-1} M \Sigma`,
  :math:`\Sigma_{mo}\Sigma_{oo}^{-1} r_o = (B^\top v)_m` and
  :math:`\Sigma_{mo}\Sigma_{oo}^{-1}\Sigma_{om} = (B^\top B)_{mm}`. O(D³) per row and component.
  "diag" and "spherical" factorise over the entries: the observed ones enter the density, the
  missing ones keep the component's mean and variance.

  Args:
    params: mixture parameters.
    x: (n, D) rows; the values at missing entries are ignored (they may be NaN).
    observed: (n, D) bool, True where observed.
    moments: also return :math:`\hat x` and :math:`C`.

  Returns:
    ``(log_gauss (n, K), x_hat (n, K, D) or None, cond)`` where ``cond`` is :math:`C`: (n, K, D, D)
    for "full", (n, D, D) for "tied" (the same for every component), (n, K, D) diagonals for
    "diag" and "spherical"; None without ``moments``.
  """
  means = jnp.asarray(params.means)
  k, d = means.shape
  dtype = means.dtype
  obs = observed.astype(dtype)  # (n, D)
  x = jnp.where(observed, x, 0).astype(dtype)
  diff = obs[:, None, :] * (x[:, None, :] - means[None])  # (n, K, D), 0 where missing
  n_obs = jnp.sum(obs, axis=1)  # (n,)
  cov_type = params.covariance_type
  cov = jnp.asarray(params.covariances)
  x_hat = cond = None
  if cov_type in ("full", "tied"):
    eye = jnp.eye(d, dtype=dtype)
    outer = obs[:, :, None] * obs[:, None, :]  # (n, D, D)
    fill = eye * (1 - obs)[:, None, :]  # identity on the missing block
    if cov_type == "full":
      masked = outer[:, None] * cov[None] + fill[:, None]  # (n, K, D, D)
      chol = linalg.cholesky(masked)
      v = linalg.triangular_solve(chol, diff[..., None], left_side=True, lower=True)[..., 0]
    else:
      masked = outer * cov[None] + fill  # (n, D, D)
      chol = linalg.cholesky(masked)
      # The same factor for every component: solve the K residuals as K right-hand sides.
      v = jnp.swapaxes(linalg.triangular_solve(chol, jnp.swapaxes(diff, 1, 2), left_side=True,
                                               lower=True), 1, 2)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    if cov_type == "tied":
      half_logdet = half_logdet[:, None]
    maha = jnp.sum(jnp.square(v), axis=-1)  # (n, K)
    if moments:
      missing = 1 - obs
      if cov_type == "full":
        b = linalg.triangular_solve(chol, obs[:, None, :, None] * cov[None], left_side=True,
                                    lower=True)  # (n, K, D, D)
        shift = jnp.einsum("nkde,nkd->nke", b, v)
        schur = cov[None] - jnp.swapaxes(b, -1, -2) @ b
        cond = (missing[:, :, None] * missing[:, None, :])[:, None] * schur
      else:
        b = linalg.triangular_solve(chol, obs[:, :, None] * cov[None], left_side=True,
                                    lower=True)  # (n, D, D)
        shift = jnp.einsum("nde,nkd->nke", b, v)
        schur = cov[None] - jnp.swapaxes(b, -1, -2) @ b
        cond = missing[:, :, None] * missing[:, None, :] * schur
      x_hat = jnp.where(observed[:, None, :], x[:, None, :], means[None] + shift)
  else:
    var = cov if cov_type == "diag" else jnp.broadcast_to(cov[:, None], (k, d))  # (K, D)
    maha = jnp.einsum("nkd,kd->nk", jnp.square(diff), 1.0 / var)
    half_logdet = 0.5 * obs @ jnp.log(var).T  # (n, K)
    if moments:
      x_hat = jnp.where(observed[:, None, :], x[:, None, :], means[None])
      cond = (1 - obs)[:, None, :] * var[None]
  log_gauss = (-0.5 * math.log(2 * math.pi) * n_obs[:, None] - half_logdet - 0.5 * maha)
  return log_gauss, x_hat, cond


def check_mask(mask: Any, x: Any) -> jax.Array:
  """Checks a mask of observed entries at the door: boolean, x's shape, and (when concrete)
  at least one observed entry per row.

  Returns:
    The mask as a bool array.

  Raises:
    ValueError: a mask of another shape or dtype, or a row with nothing observed.
  """
  x_shape, m_shape = np.shape(x), np.shape(mask)
  if m_shape != x_shape:
    raise ValueError(f"mask must have the shape of x, {x_shape} (True where x is observed), got "
                     f"{m_shape}. For NaN-coded data use mask = ~np.isnan(x).")
  dtype = getattr(mask, "dtype", None)
  if dtype is None:
    dtype = np.asarray(mask).dtype
  if dtype != bool:
    raise ValueError(f"mask must be a boolean array (True where x is observed), got dtype "
                     f"{dtype}. Convert it, e.g. mask.astype(bool) or mask = ~np.isnan(x).")
  if _checks.is_concrete(mask) and len(m_shape) and m_shape[-1]:
    empty = ~np.asarray(mask).reshape(-1, m_shape[-1]).any(axis=1)
    if empty.any():
      rows = np.flatnonzero(empty)
      raise ValueError(
          f"{rows.size} row(s) of x have no observed entry (mask all False), e.g. row "
          f"{int(rows[0])}: nothing is known about them. Drop them first, e.g. "
          "keep = mask.any(axis=-1); x, mask = x[keep], mask[keep].")
  return jnp.asarray(mask, bool)


def _flatten(params: GMMParams, x: ArrayLike) -> tuple[jax.Array, tuple[int, ...]]:
  x = jnp.asarray(x)
  d = params.means.shape[-1]
  if x.ndim < 1 or x.shape[-1] != d:
    raise ValueError(f"x must have shape (..., {d}) to match the means (K, D) = "
                     f"{tuple(params.means.shape)}, got {x.shape}.")
  return x.reshape(-1, d), x.shape[:-1]


def log_joint(params: GMMParams, x: ArrayLike, mask: ArrayLike | None = None) -> LogJoint:
  r"""The log-joint :math:`\log p(x, z{=}k) = \log w_k + \log \mathcal{N}(x; \mu_k, \Sigma_k)`.

  With ``mask``, the missing entries are marginalised exactly (the marginal of a Gaussian is the
  Gaussian of the observed block): :math:`\log p(x_o, z{=}k) = \log w_k +
  \log \mathcal{N}(x_o; \mu_{k,o}, \Sigma_{k,oo})`, o the entries of the row with mask True.

  Args:
    params: mixture parameters.
    x: points of shape (..., D).
    mask: optional bool array of x's shape, True where x is observed; the values of x at the
      other entries are ignored (NaN allowed). Every row needs an observed entry.

  Returns:
    (..., K) log-joint for every component.

  Raises:
    ValueError: bad params, x of the wrong width, or a bad mask (wrong shape or dtype, a row
      with nothing observed).

  Examples:
    >>> import jax.numpy as jnp
    >>> from lvmjax import gmm
    >>> p = gmm.GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.], [2.]]), jnp.array([1., 1.]),
    ...                   "spherical")
    >>> gmm.log_joint(p, jnp.zeros((3, 1))).shape
    (3, 2)
  """
  return _reduce_log_joint(params, x, mask, None)


@functools.partial(jax.jit, static_argnames="reduce")
def _rows_log_joint(params: GMMParams, flat: jax.Array, observed: jax.Array | None,
                    reduce: str | None, log_weights: jax.Array | None = None) -> jax.Array:
  """The numbers of :func:`log_joint` for checked rows ``flat`` (N, D), then ``reduce`` over k.

  ``log_weights`` (K,), if given, stands in for log w_k (the variational mixture's E-step adds
  its expected log weights and more to the Gaussian densities).

  Jitted, so that an eager call compiles one program rather than one per operation (the README's
  first ``gmm.posterior`` of 5,000 points: 1.7 s before, 0.3 s); under a caller's ``jit``,
  ``vmap`` or ``grad`` it is inlined like any other function.
  """
  if observed is None:
    log_gauss, _ = _log_gaussians(params, cholesky(params), flat)
  else:
    log_gauss, _, _ = _masked_gaussians(params.replace(
        means=jnp.asarray(params.means, flat.dtype),
        covariances=jnp.asarray(params.covariances, flat.dtype)), flat, observed)
  if log_weights is None:
    log_weights = jnp.log(jnp.asarray(params.weights))
  return reduce_components(log_weights[None, :] + log_gauss, reduce)


def reduce_components(log_joint: jax.Array, reduce: str | None) -> jax.Array:
  """``log_joint`` (..., K) reduced over the components: ``"logsumexp"`` (log p(x)),
  ``"softmax"`` (p(k | x)), ``"argmax"`` (the MAP component) or ``None`` (unchanged). The one
  place the mixture families (this module, ``gmm.bayesian``, ``gmm.factor``) turn a log-joint into
  their densities, posteriors and labels."""
  if reduce == "logsumexp":
    return jax.nn.logsumexp(log_joint, axis=-1)
  if reduce == "softmax":
    return jax.nn.softmax(log_joint, axis=-1)
  if reduce == "argmax":
    return jnp.argmax(log_joint, axis=-1)
  if reduce is None:
    return log_joint
  raise ValueError(f"reduce must be 'logsumexp', 'softmax', 'argmax' or None, got {reduce!r}.")


def _reduce_log_joint(params: GMMParams, x: ArrayLike, mask: ArrayLike | None,
                      reduce: str | None, log_weights: jax.Array | None = None) -> jax.Array:
  """Checks params, x and mask at the door, then :func:`_rows_log_joint` in x's batch shape."""
  check_params(params)  # values too when concrete (not under a user's jit)
  flat, batch = _flatten(params, x)
  flat = flat.astype(jnp.result_type(flat.dtype, params.means.dtype, float))
  observed = None if mask is None else check_mask(mask, x).reshape(flat.shape)
  out = _rows_log_joint(params, flat, observed, reduce, log_weights)
  return out.reshape(*batch, *out.shape[1:])


def log_marginal(params: GMMParams, x: ArrayLike, mask: ArrayLike | None = None) -> LogDensity:
  r"""The log-likelihood :math:`\log p(x) = \operatorname{logsumexp}_k \log p(x, z{=}k)`.

  Args:
    params: mixture parameters.
    x: points of shape (..., D).
    mask: optional, True where x is observed (see :func:`log_joint`): then
      :math:`\log p(x_o)`, the missing entries marginalised.

  Returns:
    (...,) log-density of each point.
  """
  return _reduce_log_joint(params, x, mask, "logsumexp")


def posterior(params: GMMParams, x: ArrayLike, mask: ArrayLike | None = None) -> Responsibilities:
  r"""The responsibilities :math:`p(z{=}k \mid x) = \exp(\log p(x, z{=}k) - \log p(x))`.

  Args:
    params: mixture parameters.
    x: points of shape (..., D).
    mask: optional, True where x is observed: then :math:`p(z{=}k \mid x_o)`.

  Returns:
    (..., K) posterior probabilities; each row sums to one.
  """
  return _reduce_log_joint(params, x, mask, "softmax")


def map_latent(params: GMMParams, x: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
  r"""The MAP component :math:`\arg\max_k p(z{=}k \mid x) = \arg\max_k \log p(x, z{=}k)`.

  Args:
    params: mixture parameters.
    x: points of shape (..., D).
    mask: optional, True where x is observed: then :math:`\arg\max_k p(z{=}k \mid x_o)`.

  Returns:
    (...,) integer component index of each point.
  """
  return _reduce_log_joint(params, x, mask, "argmax")


def sample_given(params: GMMParams, key: Key, z: ArrayLike) -> Data:
  r"""Draws :math:`x_i \sim p(x \mid z_i) = \mathcal{N}(\mu_{z_i}, \Sigma_{z_i})`.

  The model comes first, then the key, then the data (the project's key-order rule); the old
  order ``sample_given(key, params, z)`` still works.

  Args:
    params: mixture parameters.
    key: PRNG key.
    z: (n,) integer components to draw from.

  Returns:
    x of shape (n, D).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from lvmjax import gmm
    >>> p = gmm.GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.], [9.]]), jnp.array([1., 1.]),
    ...                   "spherical")
    >>> gmm.sample_given(p, jax.random.key(0), jnp.array([0, 1, 1])).shape
    (3, 1)
  """
  params, key = _checks.params_first(params, key, GMMParams, "gmm.sample_given")
  check_params(params)  # values too when concrete (not under a user's jit)
  z = jnp.asarray(z)
  if z.ndim != 1:
    raise ValueError(f"z must be a 1-D array of component indices, got shape {z.shape}.")
  if _checks.is_concrete(z) and z.size and (
      int(jnp.min(z)) < 0 or int(jnp.max(z)) >= params.num_components):
    raise ValueError(f"z must hold component indices in [0, {params.num_components}).")
  return _sample_given(params, key, z)


@jax.jit
def _sample_given(params: GMMParams, key: Key, z: jax.Array) -> Data:
  """The draws of :func:`sample_given` (checked arguments); jitted as :func:`_rows_log_joint`."""
  means = jnp.asarray(params.means)
  eps = jax.random.normal(key, (z.shape[0], means.shape[-1]), dtype=means.dtype)
  chol = cholesky(params)
  if params.covariance_type == "full":
    noise = jnp.einsum("nde,ne->nd", chol[z], eps)
  elif params.covariance_type == "tied":
    noise = eps @ chol.T
  elif params.covariance_type == "diag":
    noise = eps * chol[z]
  else:
    noise = eps * chol[z][:, None]
  return means[z] + noise


def sample(params: GMMParams, key: Key, n: int) -> tuple[Data, Labels]:
  r"""Draws n points from the mixture: :math:`z \sim \mathrm{Cat}(w)`, :math:`x \sim p(x \mid z)`.

  The model comes first, then the key, then the count (the project's key-order rule); the old
  order ``sample(key, params, n)`` still works.

  Args:
    params: mixture parameters.
    key: PRNG key.
    n: number of points.

  Returns:
    (x, z): points (n, D) and the components (n,) they were drawn from.
  """
  params, key = _checks.params_first(params, key, GMMParams, "gmm.sample")
  n = _checks.check_positive_int(n, "n", minimum=0)
  check_params(params)  # values too when concrete (not under a user's jit)
  return _sample(params, key, n)


@functools.partial(jax.jit, static_argnums=2)
def _sample(params: GMMParams, key: Key, n: int) -> tuple[Data, Labels]:
  key_z, key_x = jax.random.split(key)
  z = jax.random.categorical(key_z, jnp.log(jnp.asarray(params.weights)), shape=(n,))
  return _sample_given(params, key_x, z), z


def first_components(params: GMMParams, k: int) -> GMMParams:
  """The mixture of the first ``k`` components of ``params`` (a tied covariance is shared), as
  a fit with ``num_active=k`` holds it. Sliced as the leaves are: NumPy leaves are sliced on the
  host, so calling this for each k compiles nothing. The weights are not renormalised: those of
  a ``num_active`` fit already sum to one over its first k components.

  Args:
    params: ``GMMParams`` of K >= k components.
    k: the number of components to keep.

  Returns:
    ``GMMParams`` of k components.
  """
  cov = params.covariances if params.covariance_type == "tied" else params.covariances[:k]
  return GMMParams(params.weights[:k], params.means[:k], cov, params.covariance_type)


def num_parameters(params: GMMParams) -> int:
  """The number of free parameters: K-1 weights, K·D means and the covariance parameters."""
  k, d = params.means.shape
  cov = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d,
         "spherical": k}[params.covariance_type]
  return int(cov + k * d + k - 1)


def _total_log_likelihood(params: GMMParams, x: Any) -> tuple[jax.Array, int]:
  _checks.check_data(x)
  check_params(params, np.shape(x)[1], check_values=False)
  return jnp.sum(log_marginal(params, x)), np.shape(x)[0]


def bic(params: GMMParams, x: ArrayLike) -> jax.Array:
  r"""Bayesian information criterion :math:`-2 \log p(X) + P \log N` (lower is better)."""
  total, n = _total_log_likelihood(params, x)
  return -2.0 * total + num_parameters(params) * math.log(n)


def aic(params: GMMParams, x: ArrayLike) -> jax.Array:
  r"""Akaike information criterion :math:`-2 \log p(X) + 2 P` (lower is better)."""
  total, _ = _total_log_likelihood(params, x)
  return -2.0 * total + 2.0 * num_parameters(params)
