r"""Maximum likelihood for PPCA (closed form, Tipping & Bishop 1999) and EM for PPCA and FA.

EM works on the sufficient statistics of the data, the mean and the (1/N) scatter matrix
:math:`S`, so each iteration costs O(D^2 L) whatever N is. With
:math:`M = I + W^\top \Psi^{-1} W` and :math:`G = M^{-1} W^\top \Psi^{-1}` (posterior-mean map):

.. math::
   \overline{\mathbb{E}[z z^\top]} = M^{-1} + G S G^\top, \qquad
   W_{\text{new}} = S G^\top\, \overline{\mathbb{E}[z z^\top]}^{-1},

   \Psi_{\text{new}} = \operatorname{diag}(S - W_{\text{new}} G S) \ \text{(FA)}, \qquad
   \sigma^2_{\text{new}} = \tfrac1D \operatorname{tr}(S - W_{\text{new}} G S) \ \text{(PPCA)}.
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from lvmjax import _checks
from lvmjax import fixed_point
from lvmjax.ppca.model import PPCAParams, check_params
from lvmjax.types import DataLike, Key

_LOG_2PI = math.log(2.0 * math.pi)
MODELS = ("ppca", "fa")


class EMResult(NamedTuple):
  """Result of :func:`fit_em`.

  Attributes:
    params: fitted :class:`PPCAParams`.
    log_likelihood: ``(max_iter,)`` mean per-point log-likelihood of the params *entering* each
      iteration; entries from ``n_iter`` on are NaN (use ``log_likelihood[:n_iter]``).
    n_iter: number of iterations run (int scalar).
    converged: whether the change in mean log-likelihood fell below ``tol``.
  """
  params: PPCAParams
  log_likelihood: jax.Array
  n_iter: jax.Array
  converged: jax.Array


def _as_float_data(x: Any, num_latents: int) -> jax.Array:
  _checks.check_data(x, "x", ndim=2)
  n, d = np.shape(x)
  if n < 2:
    raise ValueError(f"x needs at least 2 rows to estimate a covariance, got {n}.")
  if num_latents >= d:
    raise ValueError(
        f"num_latents must be smaller than the number of features ({d}), got {num_latents}.")
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return x


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  mean = jnp.mean(x, axis=0)
  xc = x - mean[None, :]
  scatter = xc.T @ xc / x.shape[0]
  return mean, 0.5 * (scatter + scatter.T)


def _closed_form(mean, scatter, num_latents):
  eigvals, eigvecs = jnp.linalg.eigh(scatter)
  eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
  noise = jnp.mean(eigvals[num_latents:])
  scale = jnp.sqrt(jnp.maximum(eigvals[:num_latents] - noise, 0.0))
  return PPCAParams(eigvecs[:, :num_latents] * scale, mean, noise)


def fit_ppca(x: DataLike, num_latents: int) -> PPCAParams:
  r"""Closed-form maximum-likelihood PPCA (Tipping & Bishop, 1999).

  .. math::
     \hat\mu = \bar x, \quad \hat\sigma^2 = \frac{1}{D - L} \sum_{j > L} \lambda_j, \quad
     \hat W = U_L (\Lambda_L - \hat\sigma^2 I)^{1/2}

  with :math:`\lambda_j, U` the eigenvalues (descending) and eigenvectors of the ML covariance
  :math:`S = \frac1N \sum_n (x_n - \bar x)(x_n - \bar x)^\top`. (scikit-learn's ``PCA`` uses the
  unbiased 1/(N-1) covariance, so its PPCA covariance is ours times N/(N-1).)

  Args:
    x: ``(N, D)`` data, N >= 2.
    num_latents: L, 1 <= L < D.

  Returns:
    :class:`PPCAParams` with a scalar noise variance.

  Raises:
    ValueError: bad x (shape, NaN) or num_latents.

  Examples:
    >>> x = jax.random.normal(jax.random.key(0), (100, 5))
    >>> fit_ppca(x, 2).weight.shape
    (5, 2)
  """
  _checks.check_float_dtype(x)  # float32/float64 data (ints converted)
  num_latents = _checks.check_positive_int(num_latents, "num_latents")
  x = _as_float_data(x, num_latents)
  mean, scatter = _moments(x)
  return _closed_form(mean, scatter, num_latents)


def _mean_log_likelihood(params: PPCAParams, scatter: jax.Array) -> jax.Array:
  """Mean per-point log-likelihood of data with scatter S about the model mean."""
  d = scatter.shape[0]
  psi = jnp.broadcast_to(params.noise_variance, (d,))
  psi_inv_w = params.weight / psi[:, None]
  m = jnp.eye(params.weight.shape[1], dtype=scatter.dtype) + params.weight.T @ psi_inv_w
  chol = jnp.linalg.cholesky(m)
  a = jax.scipy.linalg.solve_triangular(chol, psi_inv_w.T, lower=True)  # (L, D)
  trace = jnp.sum(jnp.diag(scatter) / psi) - jnp.sum(a * (a @ scatter))
  log_det = jnp.sum(jnp.log(psi)) + 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
  return -0.5 * (d * _LOG_2PI + log_det + trace)


def _em_step(params: PPCAParams, scatter: jax.Array, model: str,
             min_noise_variance: float) -> PPCAParams:
  d, l = params.weight.shape
  psi = jnp.broadcast_to(params.noise_variance, (d,))
  psi_inv_w = params.weight / psi[:, None]
  m = jnp.eye(l, dtype=scatter.dtype) + params.weight.T @ psi_inv_w
  chol = jnp.linalg.cholesky(m)
  g = jax.scipy.linalg.cho_solve((chol, True), psi_inv_w.T)          # (L, D)
  m_inv = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(l, dtype=scatter.dtype))
  sg = scatter @ g.T                                                   # (D, L)
  ezz = m_inv + g @ sg
  ezz = 0.5 * (ezz + ezz.T)
  w_new = jax.scipy.linalg.solve(ezz, sg.T, assume_a="pos").T         # (D, L)
  resid = jnp.diag(scatter) - jnp.sum(w_new * sg, axis=1)             # diag(S - W G S)
  if model == "ppca":
    noise = jnp.maximum(jnp.mean(resid), min_noise_variance)
  else:
    noise = jnp.maximum(resid, min_noise_variance)
  return PPCAParams(w_new, params.mean, noise.astype(scatter.dtype))


def em_step(params: PPCAParams, x: jax.typing.ArrayLike, model: str = "ppca",
            min_noise_variance: float = 1e-6) -> PPCAParams:
  """One EM iteration for PPCA (``model="ppca"``) or factor analysis (``"fa"``) on data x.

  The mean is set to the data mean (its ML value for both models).
  """
  check_params(params)
  _checks.check_choice(model, "model", MODELS)
  x = _as_float_data(x, np.shape(params.weight)[1])
  mean, scatter = _moments(x)
  params = PPCAParams(params.weight.astype(scatter.dtype), mean,
                      jnp.asarray(params.noise_variance, scatter.dtype))
  return _em_step(params, scatter, model, min_noise_variance)


@functools.partial(jax.jit, static_argnames=("model", "max_iter"))
def _em_loop(params, scatter, tol, min_noise_variance, *, model, max_iter):
  """EM on :func:`lvmjax.fixed_point.fixed_point`; iteration t records the mean log-likelihood of
  the parameters it starts from and, once it changed by less than ``tol``, keeps them."""

  def step(carry):
    params, prev = carry
    ll = _mean_log_likelihood(params, scatter)
    converged = jnp.abs(ll - prev) < tol
    new_params = _em_step(params, scatter, model, min_noise_variance)
    params = jax.tree_util.tree_map(lambda a, b: jnp.where(converged, a, b), params, new_params)
    return (params, ll), ll, converged

  out = fixed_point.fixed_point(step, (params, jnp.asarray(-jnp.inf, scatter.dtype)), tol=tol,
                                max_iter=max_iter)
  return EMResult(out.iterate[0], out.history, out.n_iter, out.converged)


def fit_em(key: Optional[Key], x: DataLike, num_latents: int,
           model: str = "ppca", max_iter: int = 1000, tol: float = 1e-6,
           init: Union[str, PPCAParams] = "random",
           min_noise_variance: float = 1e-6) -> EMResult:
  r"""Maximum likelihood for PPCA or factor analysis by EM (Rubin & Thayer; Tipping & Bishop).

  The whole loop runs on device (``lax.while_loop``), jitted once per (model, max_iter, shapes).
  It stops when the mean per-point log-likelihood changes by less than ``tol`` between two
  iterations; the log-likelihood never decreases.

  Args:
    key: PRNG key for ``init="random"`` (may be ``None`` for the other inits).
    x: ``(N, D)`` data.
    num_latents: L, 1 <= L < D.
    model: ``"ppca"`` (isotropic noise) or ``"fa"`` (diagonal noise).
    max_iter: maximum number of EM iterations.
    tol: convergence threshold on the change of the mean log-likelihood.
    init: ``"random"`` (Gaussian loadings, noise = data variance), ``"pca"`` (the closed-form
      PPCA solution) or a :class:`PPCAParams` to start from.
    min_noise_variance: floor on the noise variance(s), against collapse (Heywood cases).

  Returns:
    :class:`EMResult`.

  Raises:
    ValueError: bad x, num_latents, model, max_iter, tol or init; init="random" without a key.

  Examples:
    >>> x = jax.random.normal(jax.random.key(0), (200, 6))
    >>> res = fit_em(jax.random.key(1), x, 2, model="fa", max_iter=50)
    >>> res.params.noise_variance.shape
    (6,)
  """
  _checks.check_fit_inputs(key, x, allow_none_key=True)  # a PRNG key or None; float data
  num_latents = _checks.check_positive_int(num_latents, "num_latents")
  _checks.check_choice(model, "model", MODELS)
  max_iter = _checks.check_positive_int(max_iter, "max_iter")
  tol = _checks.check_nonnegative(tol, "tol")
  min_noise_variance = _checks.check_nonnegative(min_noise_variance, "min_noise_variance")
  x = _as_float_data(x, num_latents)
  mean, scatter = _moments(x)
  d = scatter.shape[0]
  dtype = scatter.dtype
  if isinstance(init, PPCAParams):
    check_params(init)
    if np.shape(init.weight) != (d, num_latents):
      raise ValueError(
          f"init.weight must have shape ({d}, {num_latents}), got {np.shape(init.weight)}.")
    params0 = init
  elif init == "random":
    if key is None:
      raise ValueError("init='random' needs a PRNG key, e.g. jax.random.key(0).")
    var = jnp.diag(scatter)
    weight = jax.random.normal(key, (d, num_latents), dtype) * jnp.sqrt(jnp.mean(var) / d)
    params0 = PPCAParams(weight, mean, var)
  elif init == "pca":
    params0 = _closed_form(mean, scatter, num_latents)
  else:
    raise ValueError(f"Unknown init {init!r}; expected 'random', 'pca' or a PPCAParams.")
  noise = jnp.asarray(params0.noise_variance, dtype)
  noise = jnp.mean(noise) if model == "ppca" else jnp.broadcast_to(noise, (d,))
  params0 = PPCAParams(jnp.asarray(params0.weight, dtype), mean, noise)
  return _em_loop(params0, scatter, jnp.asarray(tol, dtype),
                  jnp.asarray(min_noise_variance, dtype), model=model, max_iter=max_iter)
