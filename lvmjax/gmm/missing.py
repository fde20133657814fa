r"""Missing data in the Gaussian mixture, marginalised exactly (Ghahramani & Jordan 1994).

Entries of x are missing at random where the mask is False (in a fit: where x is NaN). The
density of a row is that of its observed entries o, the missing ones m integrated out:

.. math::

  p(x_o) = \sum_k w_k\, \mathcal{N}(x_o; \mu_{k,o}, \Sigma_{k,oo}).

EM treats the missing entries as latent with z: the E-step takes, per row and component, the
responsibility :math:`r_{nk} = p(z{=}k \mid x_o)`, the conditional mean and covariance of the
missing entries

.. math::

  \hat x_{nk,m} = \mu_{k,m} + \Sigma_{k,mo}\Sigma_{k,oo}^{-1}(x_o - \mu_{k,o}), \qquad
  C_{nk,mm} = \Sigma_{k,mm} - \Sigma_{k,mo}\Sigma_{k,oo}^{-1}\Sigma_{k,om}

(:math:`\hat x_{nk,o} = x_o`, :math:`C_{nk}` zero outside the missing block), and adds up the
expected sufficient statistics :math:`N_k = \sum_n s_n r_{nk}`,
:math:`S^{(1)}_k = \sum_n s_n r_{nk} (\hat x_{nk} - c_k)`,
:math:`S^{(2)}_k = \sum_n s_n r_{nk} [(\hat x_{nk} - c_k)(\hat x_{nk} - c_k)^\top + C_{nk}]`
(:class:`lvmjax.gmm.SuffStats`, so the M-step is the GMM's own, :func:`lvmjax.gmm.m_step`).
Each iteration never decreases the observed-data log-likelihood :math:`\sum_n s_n \log p(x_{n,o})`,
which is what the fit records. With nothing missing it is ordinary EM.

This module holds the math (:func:`expected_stats`, :func:`impute`, :func:`sample_missing`) and
the door checks; the fit is ``gmm.fit(..., missing="marginalize")``, which runs
:class:`lvmjax.gmm.em.MissingGaussianFamily`, a :class:`lvmjax.mixture.MixtureFamily` (the
:class:`~lvmjax.gmm.em.GaussianFamily` with this E-step; it sits in ``em`` beside its parent
because ``gmm.fit`` dispatches to it and modules of a package import downward only), so the fit
gets chunking, sample weights, restarts, meshes, streaming and frozen parameters from
:mod:`lvmjax.mixture`. The E-step costs
O(K·D³) per row for "full" and O(D³) for "tied" (a factorisation of the observed block of each
row, done by one masked matrix for every row at once), O(K·D) for "diag" and "spherical".

Initialisation: the named initialisations run on the data with each missing entry replaced by its
column's (weighted) observed mean, then EM takes over from those parameters.

References:
  Z. Ghahramani and M. I. Jordan, "Supervised learning from incomplete data via an EM approach",
  NIPS 6, 1994.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import sharding
from lvmjax.gmm import model
from lvmjax.gmm.model import GMMParams
from lvmjax.types import Data, Key

#: ``gmm.fit``'s choices for NaN entries of x.
MISSING = ("error", "marginalize")


def expected_stats(params: GMMParams, x: jax.Array, w: jax.Array) -> tuple[jax.Array, ...]:
  r"""The missing-data E-step on one chunk of rows (NaN = missing), moments about the means.

  .. math::

    N_k = \sum_n s_n r_{nk}, \quad S^{(1)}_k = \sum_n s_n r_{nk}(\hat x_{nk} - \mu_k), \quad
    S^{(2)}_k = \sum_n s_n r_{nk}\bigl[(\hat x_{nk} - \mu_k)(\hat x_{nk} - \mu_k)^\top
    + C_{nk}\bigr], \quad \ell = \sum_n s_n \log p(x_{n,o})

  ("tied" sums :math:`S^{(2)}` over k; "diag" and "spherical" keep diagonals). Rows of weight 0
  add exactly 0.

  Args:
    params: the E-step's parameters.
    x: (n, D) rows with NaN at the missing entries.
    w: (n,) their weights.

  Returns:
    ``(counts, sum_x, sum_xx, log_likelihood, total_weight)``, the fields of
    :class:`lvmjax.gmm.SuffStats`.
  """
  observed = ~jnp.isnan(x)
  log_gauss, x_hat, cond = model._masked_gaussians(  # pylint: disable=protected-access
      params, x, observed, moments=True)
  log_joint = jnp.log(params.weights)[None, :] + log_gauss
  log_px = jax.nn.logsumexp(log_joint, axis=1)
  keep = w > 0
  wr = jnp.where(keep[:, None], w[:, None] * jnp.exp(log_joint - log_px[:, None]), 0)
  diff = x_hat - params.means[None]  # (n, K, D)
  wd = wr[:, :, None] * diff
  cov_type = params.covariance_type
  if cov_type == "full":
    sum_xx = jnp.einsum("nkd,nke->kde", wd, diff) + jnp.einsum("nk,nkde->kde", wr, cond)
  elif cov_type == "tied":
    sum_xx = (jnp.einsum("nkd,nke->de", wd, diff)
              + jnp.einsum("n,nde->de", jnp.sum(wr, axis=1), cond))
  else:
    sum_xx = jnp.sum(wd * diff + wr[:, :, None] * cond, axis=0)
  return (jnp.sum(wr, axis=0), jnp.sum(wd, axis=0), sum_xx,
          jnp.sum(jnp.where(keep, w * log_px, 0)), jnp.sum(w))


def observed_mean(x: jax.Array, w: jax.Array, shard: sharding.Shard | None = None) -> jax.Array:
  r"""(D,) weighted mean of each column's observed (non-NaN) entries,
  :math:`\sum_n s_n o_{nd} x_{nd} / \sum_n s_n o_{nd}` (over the devices with ``shard``)."""
  observed = ~jnp.isnan(x)
  total = sharding.psum(w @ jnp.where(observed, x, 0), shard)
  count = sharding.psum(w @ observed.astype(x.dtype), shard)
  return total / jnp.maximum(count, jnp.finfo(x.dtype).tiny)


def fill_missing(x: jax.Array, value: Any = 0) -> jax.Array:
  """x with its NaN entries replaced by ``value`` (0: the column mean of data centred by
  :func:`observed_mean`, i.e. mean imputation)."""
  return jnp.where(jnp.isnan(x), value, x)


def default_chunk_size(num_points: int, num_components: int, num_features: int,
                       covariance_type: str) -> int:
  """Rows per chunk of the missing-data E-step: about 2**19 floats of intermediates, which are
  (chunk, K, D, D) for "full", (chunk, D, D) for "tied", (chunk, K, D) otherwise."""
  k, d = num_components, num_features
  per_row = {"full": k * d * d, "tied": d * d + k * d}.get(covariance_type, k * d)
  rows = (2**19 // max(1, per_row)) // 8 * 8
  return int(min(num_points, max(8, rows)))


def _refuse_nan(count: int) -> None:
  if count:
    raise ValueError(
        f"x contains {count} NaN value(s). If they are missing entries, fit with "
        "missing=\"marginalize\" (EM that integrates them out exactly); otherwise remove or "
        "impute them (e.g. x = x[~np.isnan(x).any(axis=1)]).")


def check_missing_data(x: Any, missing: str) -> None:
  """The door check of NaN entries in a fit's data.

  ``missing="error"``: any NaN is a ValueError that names ``missing="marginalize"``.
  ``"marginalize"``: NaN entries are missing values; infinite values, a row with nothing observed
  or a column never observed are ValueErrors. Global (multi-process) arrays are checked by the
  entries this process holds.

  Raises:
    ValueError: as above, or ``missing`` not in :data:`MISSING`.
  """
  _checks.check_choice(missing, "missing", MISSING)
  if not _checks.is_concrete(x) or not hasattr(x, "shape") and not isinstance(x, (list, tuple)):
    return
  if missing == "error" and _checks.off_host(x):
    _refuse_nan(int(_checks.count_nan(x)))  # counted on the accelerator: no copy to the host
    return
  if sharding.is_global(x):
    arr = np.concatenate([np.asarray(s.data).reshape(-1, x.shape[-1])
                          for s in x.addressable_shards]) if x.ndim == 2 else None
    if arr is None:
      return
  else:
    arr = np.asarray(x)
  if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
    return  # the other checks explain
  nan = np.isnan(arr)
  if missing == "error":
    _refuse_nan(int(nan.sum()))
    return
  if np.isinf(arr).any():
    raise ValueError(f"x contains {int(np.isinf(arr).sum())} infinite value(s); with "
                     "missing=\"marginalize\" only NaN marks a missing entry. Replace them by "
                     "NaN or drop their rows.")
  empty = nan.all(axis=1)
  if empty.any():
    rows = np.flatnonzero(empty)
    raise ValueError(
        f"{rows.size} row(s) of x are all NaN (nothing observed), e.g. row {int(rows[0])}. "
        "Drop them first: x = x[~np.isnan(x).all(axis=1)].")
  if not sharding.is_global(x):
    never = nan.all(axis=0)
    if never.any():
      raise ValueError(
          f"column(s) {np.flatnonzero(never).tolist()} of x are never observed (all NaN); a "
          "mixture cannot learn them. Drop those columns.")


def _conditional(params: GMMParams, x: ArrayLike, mask: ArrayLike):
  """(flat rows, flat mask, batch shape, p(z|x_o) (n, K), x_hat (n, K, D), cond) for the public
  functions below."""
  model.check_params(params)
  observed = model.check_mask(mask, x)
  x = jnp.asarray(x)
  d = params.means.shape[-1]
  if x.ndim < 1 or x.shape[-1] != d:
    raise ValueError(f"x must have shape (..., {d}) to match the means (K, D) = "
                     f"{tuple(params.means.shape)}, got {x.shape}.")
  batch = x.shape[:-1]
  dtype = jnp.result_type(x.dtype, params.means.dtype, float)
  flat = x.reshape(-1, d).astype(dtype)
  observed = observed.reshape(-1, d)
  params = params.replace(means=jnp.asarray(params.means, dtype),
                          covariances=jnp.asarray(params.covariances, dtype))
  log_gauss, x_hat, cond = model._masked_gaussians(  # pylint: disable=protected-access
      params, flat, observed, moments=True)
  resp = jax.nn.softmax(jnp.log(jnp.asarray(params.weights, dtype))[None] + log_gauss, axis=-1)
  return flat, observed, batch, resp, x_hat, cond


def impute(params: GMMParams, x: ArrayLike, mask: ArrayLike) -> Data:
  r"""The conditional mean of the missing entries given the observed ones.

  .. math::

    \mathbb{E}[x_m \mid x_o] = \sum_k p(z{=}k \mid x_o)\,
    \bigl(\mu_{k,m} + \Sigma_{k,mo}\Sigma_{k,oo}^{-1}(x_o - \mu_{k,o})\bigr)

  Args:
    params: mixture parameters.
    x: (..., D) points; the values at missing entries are ignored (NaN allowed).
    mask: bool, x's shape, True where x is observed; every row needs an observed entry.

  Returns:
    (..., D) x with its missing entries replaced by their conditional mean (observed entries
    returned as they are).

  Raises:
    ValueError: bad params, x or mask.

  Examples:
    >>> import jax.numpy as jnp
    >>> from lvmjax import gmm
    >>> p = gmm.GMMParams(jnp.array([1.0]), jnp.array([[0.0, 0.0]]),
    ...                   jnp.array([[[1.0, 0.5], [0.5, 1.0]]]), "full")
    >>> gmm.impute(p, jnp.array([[2.0, jnp.nan]]), jnp.array([[True, False]])).tolist()
    [[2.0, 1.0]]
  """
  flat, observed, batch, resp, x_hat, _ = _conditional(params, x, mask)
  mean = jnp.einsum("nk,nkd->nd", resp, x_hat)
  out = jnp.where(observed, flat, mean)
  return out.reshape(*batch, flat.shape[-1])


def sample_missing(params: GMMParams, key: Key, x: ArrayLike, mask: ArrayLike) -> Data:
  r"""Draws the missing entries from their conditional distribution given the observed ones.

  .. math::

    z \sim p(z \mid x_o), \qquad x_m \sim \mathcal{N}\bigl(\mu_{z,m} + \Sigma_{z,mo}
    \Sigma_{z,oo}^{-1}(x_o - \mu_{z,o}),\; \Sigma_{z,mm} - \Sigma_{z,mo}\Sigma_{z,oo}^{-1}
    \Sigma_{z,om}\bigr)

  (multiple imputation: independent keys give independent completions).

  Args:
    params: mixture parameters.
    key: PRNG key.
    x: (..., D) points; the values at missing entries are ignored (NaN allowed).
    mask: bool, x's shape, True where x is observed.

  Returns:
    (..., D) x with its missing entries drawn (observed entries as they are).

  Raises:
    ValueError: bad params, key, x or mask.
  """
  _checks.check_key(key)
  flat, observed, batch, resp, x_hat, cond = _conditional(params, x, mask)
  n, d = flat.shape
  key_z, key_x = jax.random.split(key)
  z = jax.random.categorical(key_z, jnp.log(resp), axis=-1)  # (n,)
  mean = jnp.take_along_axis(x_hat, z[:, None, None], axis=1)[:, 0]  # (n, D)
  eps = jax.random.normal(key_x, (n, d), flat.dtype)
  obs = observed.astype(flat.dtype)
  cov_type = params.covariance_type
  if cov_type in ("full", "tied"):
    c = cond if cov_type == "tied" else jnp.take_along_axis(
        cond, z[:, None, None, None], axis=1)[:, 0]  # (n, D, D)
    # The identity on the observed block makes the factor that of the missing block.
    chol = jnp.linalg.cholesky(c + obs[:, :, None] * jnp.eye(d, dtype=flat.dtype))
    noise = jnp.einsum("nde,ne->nd", chol, eps)
  else:
    var = jnp.take_along_axis(cond, z[:, None, None], axis=1)[:, 0]  # (n, D)
    noise = jnp.sqrt(var) * eps
  out = jnp.where(observed, flat, mean + noise)
  return out.reshape(*batch, d)
