r"""Probabilistic PCA and factor analysis: the exact linear-Gaussian latent variable model.

.. math::
   p(z) = \mathcal{N}(0, I_L), \qquad p(x \mid z) = \mathcal{N}(W z + \mu, \Psi), \qquad
   p(x) = \mathcal{N}(\mu, C), \quad C = W W^\top + \Psi

PPCA has :math:`\Psi = \sigma^2 I` (``noise_variance`` a scalar), factor analysis a diagonal
:math:`\Psi` (``noise_variance`` of shape ``(D,)``); every function here serves both. Everything
that involves :math:`C^{-1}` goes through the Woodbury identity and the Cholesky factor of the
:math:`L \times L` matrix :math:`M = I + W^\top \Psi^{-1} W`; no D x D matrix is inverted.
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lvmjax import _checks
from lvmjax.types import Data, Key, Latents

_LOG_2PI = math.log(2.0 * math.pi)


class PPCAParams(NamedTuple):
  """Parameters of PPCA / factor analysis.

  Attributes:
    weight: W, ``(D, L)`` factor loadings.
    mean: mu, ``(D,)``.
    noise_variance: sigma^2, a scalar ``()`` (PPCA) or the diagonal of Psi, ``(D,)`` (FA); > 0.
  """
  weight: jax.Array
  mean: jax.Array
  noise_variance: jax.Array


def check_params(params: PPCAParams) -> None:
  """Raises ``ValueError`` if the shapes of ``params`` disagree or the noise is not positive."""
  w_shape, m_shape, n_shape = (np.shape(p) for p in params)
  if len(w_shape) != 2:
    raise ValueError(f"weight must have shape (num_features, num_latents), got {w_shape}.")
  d = w_shape[0]
  if m_shape != (d,):
    raise ValueError(f"mean must have shape ({d},) to match weight {w_shape}, got {m_shape}.")
  if n_shape not in ((), (d,)):
    raise ValueError(
        f"noise_variance must be a scalar (PPCA) or have shape ({d},) (factor analysis), "
        f"got {n_shape}.")
  if _checks.is_concrete(params.noise_variance):
    nv = np.asarray(params.noise_variance)
    if not np.all(np.isfinite(nv)) or np.any(nv <= 0):
      raise ValueError("noise_variance must be finite and > 0.")


def _check_x(params: PPCAParams, x: Any) -> jax.Array:
  _checks.check_data(x, "x", ndim=2)
  d = np.shape(params.weight)[0]
  if np.shape(x)[1] != d:
    raise ValueError(f"x has {np.shape(x)[1]} features but the model has {d}.")
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _psi(params: PPCAParams) -> jax.Array:
  """Diagonal of Psi, ``(D,)``."""
  return jnp.broadcast_to(params.noise_variance, params.mean.shape)


def _m_cholesky(params: PPCAParams) -> tuple[jax.Array, jax.Array]:
  """Returns (Psi^{-1} W (D, L), lower Cholesky factor of M = I + W^T Psi^{-1} W (L, L))."""
  w = params.weight
  psi_inv_w = w / _psi(params)[:, None]
  m = jnp.eye(w.shape[1], dtype=w.dtype) + w.T @ psi_inv_w
  return psi_inv_w, jnp.linalg.cholesky(m)


def covariance(params: PPCAParams) -> jax.Array:
  r"""The marginal covariance :math:`C = W W^\top + \Psi`, ``(D, D)`` (for inspection/tests)."""
  check_params(params)
  return params.weight @ params.weight.T + jnp.diag(_psi(params))


def log_marginal(params: PPCAParams, x: jax.typing.ArrayLike) -> jax.Array:
  r"""Exact log p(x) per point.

  .. math::
     \log p(x) = -\tfrac12\left[D \log 2\pi + \log|\Psi| + \log|M|
        + r^\top \Psi^{-1} r - \|L_M^{-1} W^\top \Psi^{-1} r\|^2\right],
     \quad r = x - \mu,\ M = I + W^\top \Psi^{-1} W = L_M L_M^\top

  Args:
    params: :class:`PPCAParams`.
    x: ``(N, D)``.

  Returns:
    ``(N,)`` log-densities.

  Examples:
    >>> params = PPCAParams(jnp.ones((3, 1)), jnp.zeros(3), jnp.asarray(0.5))
    >>> log_marginal(params, jnp.zeros((2, 3))).shape
    (2,)
  """
  check_params(params)
  return _log_marginal(params, _check_x(params, x))


@jax.jit
def _log_marginal(params: PPCAParams, x: jax.Array) -> jax.Array:
  """:func:`log_marginal` on checked arguments, as one compiled program (an eager call compiled
  one per operation); a caller's ``jit`` inlines it."""
  psi = _psi(params)
  psi_inv_w, chol = _m_cholesky(params)
  r = x - params.mean[None, :]
  proj = jax.scipy.linalg.solve_triangular(chol, (r @ psi_inv_w).T, lower=True)  # (L, N)
  maha = jnp.sum(r * r / psi[None, :], axis=-1) - jnp.sum(proj * proj, axis=0)
  log_det = jnp.sum(jnp.log(psi)) + 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
  return -0.5 * (x.shape[-1] * _LOG_2PI + log_det + maha)


def log_joint(params: PPCAParams, x: jax.typing.ArrayLike, z: jax.typing.ArrayLike) -> jax.Array:
  r"""log p(x, z) = log N(z; 0, I) + log N(x; W z + mu, Psi) per point; x ``(N, D)``, z ``(N, L)``."""
  check_params(params)
  x = _check_x(params, x)
  z = jnp.asarray(z)
  if z.shape != (x.shape[0], params.weight.shape[1]):
    raise ValueError(f"z must have shape {(x.shape[0], params.weight.shape[1])}, got {z.shape}.")
  psi = _psi(params)
  r = x - z @ params.weight.T - params.mean[None, :]
  log_px_z = -0.5 * (jnp.sum(r * r / psi[None, :], axis=-1) + jnp.sum(jnp.log(psi)) + x.shape[-1] * _LOG_2PI)
  log_pz = -0.5 * (jnp.sum(z * z, axis=-1) + z.shape[-1] * _LOG_2PI)
  return log_px_z + log_pz


def posterior(params: PPCAParams, x: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
  r"""Exact posterior p(z | x) = N(m(x), S).

  .. math::
     S = M^{-1}, \qquad m(x) = M^{-1} W^\top \Psi^{-1} (x - \mu), \qquad M = I + W^\top \Psi^{-1} W

  (for PPCA, :math:`S = \sigma^2 (W^\top W + \sigma^2 I)^{-1}` as in Tipping & Bishop). The
  covariance does not depend on x, so it is returned once.

  Args:
    params: :class:`PPCAParams`.
    x: ``(N, D)``.

  Returns:
    ``(mean (N, L), covariance (L, L))``.
  """
  check_params(params)
  return _posterior(params, _check_x(params, x))


@jax.jit
def _posterior(params: PPCAParams, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """:func:`posterior` on checked arguments, as one compiled program (as :func:`_log_marginal`)."""
  psi_inv_w, chol = _m_cholesky(params)
  rhs = ((x - params.mean[None, :]) @ psi_inv_w).T  # (L, N)
  mean = jax.scipy.linalg.cho_solve((chol, True), rhs).T
  eye = jnp.eye(chol.shape[0], dtype=chol.dtype)
  cov = jax.scipy.linalg.cho_solve((chol, True), eye)
  return mean, 0.5 * (cov + cov.T)


def map_latent(params: PPCAParams, x: jax.typing.ArrayLike) -> jax.Array:
  """argmax_z p(z | x): the posterior mean, ``(N, L)`` (the posterior is Gaussian)."""
  return posterior(params, x)[0]


def sample_given(params: PPCAParams, key: Key, z: jax.typing.ArrayLike) -> Data:
  r"""Draws x ~ N(W z + mu, Psi) for given latents ``z (N, L)``: ``(N, D)``.

  Model, then key, then data (the project's key-order rule); the old order
  ``sample_given(key, params, z)`` still works.
  """
  params, key = _checks.params_first(params, key, PPCAParams, "ppca.sample_given")
  check_params(params)
  z = jnp.asarray(z)
  if z.ndim != 2 or z.shape[1] != params.weight.shape[1]:
    raise ValueError(
        f"z must have shape (num_points, {params.weight.shape[1]}), got {z.shape}.")
  return _sample_given(params, key, z)


@jax.jit
def _sample_given(params: PPCAParams, key: Key, z: jax.Array) -> Data:
  """:func:`sample_given` on checked arguments, as one compiled program."""
  loc = z @ params.weight.T + params.mean[None, :]
  noise = jax.random.normal(key, loc.shape, loc.dtype) * jnp.sqrt(_psi(params)).astype(loc.dtype)[None, :]
  return loc + noise


def sample(params: PPCAParams, key: Key, n: int) -> tuple[Data, Latents]:
  """Draws (x, z) from the joint: z ~ N(0, I), x ~ p(x | z). Returns ``(x (n, D), z (n, L))``.

  Model, then key, then count (the project's key-order rule); the old order
  ``sample(key, params, n)`` still works.
  """
  params, key = _checks.params_first(params, key, PPCAParams, "ppca.sample")
  check_params(params)
  n = _checks.check_positive_int(n, "n")
  return _sample(params, key, n)


@functools.partial(jax.jit, static_argnums=2)
def _sample(params: PPCAParams, key: Key, n: int) -> tuple[Data, Latents]:
  key_z, key_x = jax.random.split(key)
  z = jax.random.normal(key_z, (n, params.weight.shape[1]), jnp.result_type(params.weight))
  return _sample_given(params, key_x, z), z


def num_parameters(params: PPCAParams) -> int:
  """Free parameters: D L - L (L - 1) / 2 (rotation) + D (mean) + 1 or D (noise)."""
  d, l = np.shape(params.weight)
  return int(d * l - l * (l - 1) // 2 + d + (1 if np.ndim(params.noise_variance) == 0 else d))
