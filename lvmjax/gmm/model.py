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

import math
from typing import Any

import jax
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
    maha = jnp.sum(jnp.square(diff / chol[None]), axis=-1)
    half_logdet = jnp.sum(jnp.log(chol), axis=-1)
  else:  # spherical
    maha = jnp.sum(jnp.square(diff), axis=-1) / jnp.square(chol)[None]
    half_logdet = n_features * jnp.log(chol)
  log_norm = -0.5 * n_features * math.log(2 * math.pi)
  return log_norm - half_logdet[None, :] - 0.5 * maha, diff


def _flatten(params: GMMParams, x: ArrayLike) -> tuple[jax.Array, tuple[int, ...]]:
  x = jnp.asarray(x)
  d = params.means.shape[-1]
  if x.ndim < 1 or x.shape[-1] != d:
    raise ValueError(f"x must have shape (..., {d}) to match the means (K, D) = "
                     f"{tuple(params.means.shape)}, got {x.shape}.")
  return x.reshape(-1, d), x.shape[:-1]


def log_joint(params: GMMParams, x: ArrayLike) -> LogJoint:
  r"""The log-joint :math:`\log p(x, z{=}k) = \log w_k + \log \mathcal{N}(x; \mu_k, \Sigma_k)`.

  Args:
    params: mixture parameters.
    x: points of shape (..., D).

  Returns:
    (..., K) log-joint for every component.

  Examples:
    >>> import jax.numpy as jnp
    >>> from lvmjax import gmm
    >>> p = gmm.GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.], [2.]]), jnp.array([1., 1.]),
    ...                   "spherical")
    >>> gmm.log_joint(p, jnp.zeros((3, 1))).shape
    (3, 2)
  """
  check_params(params)  # values too when concrete (not under a user's jit)
  flat, batch = _flatten(params, x)
  flat = flat.astype(jnp.result_type(flat.dtype, params.means.dtype, float))
  log_gauss, _ = _log_gaussians(params, cholesky(params), flat)
  out = jnp.log(jnp.asarray(params.weights))[None, :] + log_gauss
  return out.reshape(*batch, params.means.shape[0])


def log_marginal(params: GMMParams, x: ArrayLike) -> LogDensity:
  r"""The log-likelihood :math:`\log p(x) = \operatorname{logsumexp}_k \log p(x, z{=}k)`.

  Args:
    params: mixture parameters.
    x: points of shape (..., D).

  Returns:
    (...,) log-density of each point.
  """
  return jax.nn.logsumexp(log_joint(params, x), axis=-1)


def posterior(params: GMMParams, x: ArrayLike) -> Responsibilities:
  r"""The responsibilities :math:`p(z{=}k \mid x) = \exp(\log p(x, z{=}k) - \log p(x))`.

  Args:
    params: mixture parameters.
    x: points of shape (..., D).

  Returns:
    (..., K) posterior probabilities; each row sums to one.
  """
  return jax.nn.softmax(log_joint(params, x), axis=-1)


def map_latent(params: GMMParams, x: ArrayLike) -> jax.Array:
  r"""The MAP component :math:`\arg\max_k p(z{=}k \mid x) = \arg\max_k \log p(x, z{=}k)`.

  Args:
    params: mixture parameters.
    x: points of shape (..., D).

  Returns:
    (...,) integer component index of each point.
  """
  return jnp.argmax(log_joint(params, x), axis=-1)


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
  check_params(params, check_values=False)
  key_z, key_x = jax.random.split(key)
  z = jax.random.categorical(key_z, jnp.log(jnp.asarray(params.weights)), shape=(n,))
  return sample_given(params, key_x, z), z


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
