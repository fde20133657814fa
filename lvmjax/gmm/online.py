r"""Stepwise online EM for the Gaussian mixture (Cappé & Moulines, 2009): one pass over a stream.

Instead of summing the statistics of all the data before each M-step, online EM keeps a running
average of the normalised statistics and takes an M-step after every mini-batch:

.. math::

  \bar s_t = (1 - \rho_t)\, \bar s_{t-1} + \rho_t\, \frac{S_{B_t}(\theta_{t-1})}{|B_t|},
  \qquad \theta_t = \mathrm{M}(\bar s_t), \qquad \rho_t = (t + t_0)^{-\kappa},

with :math:`\kappa \in (0.5, 1]` (so that :math:`\sum_t \rho_t = \infty` and
:math:`\sum_t \rho_t^2 < \infty`) and :math:`\rho_1 = 1` (the first batch sets the statistics).
:math:`|B_t|` is the batch's total sample weight. Our statistics are moments about the E-step
means (see :mod:`lvmjax.gmm.em`); after every M-step the running statistics are re-centred on
the new means (:func:`recenter_stats`), so old and new statistics are always added about the
same centres.

References:
  O. Cappé and E. Moulines. On-line expectation-maximization algorithm for latent data models.
  JRSS B 71(3), 2009. P. Liang and D. Klein. Online EM for unsupervised models. NAACL 2009.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import data as data_lib
from lvmjax.gmm import em
from lvmjax.gmm import model
from lvmjax.gmm.em import SuffStats
from lvmjax.gmm.model import GMMParams


class OnlineEMState(NamedTuple):
  """State of stepwise online EM (a pytree; checkpoint it to resume a stream).

  Attributes:
    params: the current parameters :math:`\\theta_t`.
    stats: the running normalised statistics :math:`\\bar s_t`, about ``params.means``.
    step: int32, the number of batches seen :math:`t`.
  """
  params: GMMParams
  stats: SuffStats
  step: jax.Array


class OnlineFitResult(NamedTuple):
  """What :func:`fit` returns.

  Attributes:
    params: the final parameters.
    log_likelihood: (num_batches,) mean log-likelihood of each batch under the parameters
      before that batch's update (an honest, "progressive" estimate of the fit).
    num_batches: number of updates.
    state: the final :class:`OnlineEMState` (to continue on more data).
  """
  params: GMMParams
  log_likelihood: jax.Array
  num_batches: int
  state: OnlineEMState


def recenter_stats(stats: SuffStats, old_centers: ArrayLike, new_centers: ArrayLike,
                   covariance_type: str) -> SuffStats:
  r"""Re-expresses moments about ``old_centers`` as moments about ``new_centers``.

  With :math:`\delta_k = c_k - c'_k`:

  .. math::

    S'^{(1)}_k = S^{(1)}_k + N_k \delta_k, \qquad
    S'^{(2)}_k = S^{(2)}_k + S^{(1)}_k \delta_k^\top + \delta_k S^{(1)\top}_k
                 + N_k \delta_k \delta_k^\top

  (summed over k for "tied", diagonals for "diag" and "spherical"). Exact in exact arithmetic;
  lets statistics taken with different parameters be added.

  Args:
    stats: ``SuffStats`` about ``old_centers``.
    old_centers: (K, D).
    new_centers: (K, D).
    covariance_type: of the statistics.

  Returns:
    The same statistics about ``new_centers``.
  """
  delta = jnp.asarray(old_centers) - jnp.asarray(new_centers)
  n, s1 = stats.counts, stats.sum_x
  new_s1 = s1 + n[:, None] * delta
  if covariance_type == "full":
    cross = jnp.einsum("kd,ke->kde", s1, delta)
    s2 = stats.sum_xx + cross + jnp.swapaxes(cross, -1, -2) + jnp.einsum(
        "k,kd,ke->kde", n, delta, delta)
  elif covariance_type == "tied":
    cross = jnp.einsum("kd,ke->de", s1, delta)
    s2 = stats.sum_xx + cross + cross.T + jnp.einsum("k,kd,ke->de", n, delta, delta)
  else:
    s2 = stats.sum_xx + 2 * s1 * delta + n[:, None] * delta * delta
  return stats._replace(sum_x=new_s1, sum_xx=s2)


def step_size(t: ArrayLike, kappa: float = 0.6, t0: float = 2.0) -> jax.Array:
  r""":math:`\rho_t = (t + t_0)^{-\kappa}` for the t-th batch (t >= 2); :math:`\rho_1 = 1`."""
  t = jnp.asarray(t)
  return jnp.where(t <= 1, 1.0, jnp.power(t + t0, -kappa))


def init_state(params: GMMParams) -> OnlineEMState:
  """The state before the first batch (its statistics are replaced by the first batch's)."""
  k, d = params.means.shape
  dtype = params.means.dtype
  stats = em.zero_stats(k, d, params.covariance_type, dtype)
  return OnlineEMState(params, stats, jnp.zeros((), jnp.int32))


def update(state: OnlineEMState, x: ArrayLike, sample_weight: ArrayLike | None = None, *,
           kappa: float = 0.6, t0: float = 2.0, reg_covar: float = 1e-6,
           chunk_size: int | None = None) -> tuple[OnlineEMState, jax.Array]:
  r"""One stepwise EM update on a mini-batch (pure; jit it, or use :func:`fit`).

  Args:
    state: the current :class:`OnlineEMState`.
    x: (n, D) mini-batch.
    sample_weight: optional (n,) weights (0 marks padding rows).
    kappa: step-size exponent in (0.5, 1].
    t0: step-size offset (>= 0); larger values make the early steps smaller.
    reg_covar: added to the covariances' diagonals in the M-step.
    chunk_size: rows per E-step chunk.

  Returns:
    ``(new_state, batch mean log-likelihood under the old parameters)``.
  """
  params = state.params
  batch = em.e_step(params, x, sample_weight, chunk_size=chunk_size)
  total = batch.total_weight
  normalised = jax.tree.map(lambda a: a / total, batch)
  t = state.step + 1
  rho = step_size(t, kappa, t0).astype(params.means.dtype)
  stats = jax.tree.map(lambda old, new: (1 - rho) * old + rho * new, state.stats, normalised)
  new_params = em.m_step(params, stats, reg_covar)
  stats = recenter_stats(stats, params.means, new_params.means, params.covariance_type)
  return OnlineEMState(new_params, stats, t), batch.log_likelihood / total


@functools.partial(jax.jit, static_argnames=("chunk_size",), donate_argnums=(0,))
def _update_jit(state, x, w, kappa, t0, reg_covar, *, chunk_size):
  return update(state, x, w, kappa=kappa, t0=t0, reg_covar=reg_covar, chunk_size=chunk_size)


def fit(key: jax.Array, data: Any, num_components: int, covariance_type: str = "full",
        init: str | GMMParams = "kmeans", *, batch_size: int = 1024, num_epochs: int = 1,
        shuffle: bool = True, kappa: float = 0.6, t0: float = 2.0, reg_covar: float = 1e-6,
        init_size: int | None = None, sample_weight: ArrayLike | None = None,
        chunk_size: int | None = None, dtype: Any = None,
        callback: Callable[[int, float], None] | None = None) -> OnlineFitResult:
  r"""Fits a Gaussian mixture by stepwise online EM in (by default) one pass over the data.

  Args:
    key: PRNG key (initialisation, shuffling).
    data: (N, D) array or ``numpy.memmap``, a ``.npy`` path, or a callable returning an
      iterable of batches ((n, D) arrays or ``(x, sample_weight)`` pairs), e.g. a live stream.
    num_components, covariance_type, reg_covar: as :func:`lvmjax.gmm.fit`.
    init: a ``GMMParams``, or an init of :func:`lvmjax.gmm.fit` run on the first ``init_size``
      rows (a random subsample for array data).
    batch_size: rows per update.
    num_epochs: passes over array data (a callable source is read ``num_epochs`` times too).
    shuffle: visit array rows in a random order (for a memmap: random batches of consecutive
      rows, so that reads stay sequential).
    kappa: step-size exponent in (0.5, 1].
    t0: step-size offset >= 0.
    init_size: rows for the initialisation (default ``10 * batch_size``).
    sample_weight: optional (N,) weights (array data only).
    chunk_size: rows per E-step chunk.
    dtype: computation dtype (default from the data, float32 unless x64 and float64 data).
    callback: optional ``callback(batch_index, batch_log_likelihood)``.

  Returns:
    An :class:`OnlineFitResult`.

  Raises:
    ValueError: bad arguments or data.
  """
  _checks.check_fit_inputs(key, data, x_name="data")  # a PRNG key; float32/float64 arrays
  num_components = _checks.check_positive_int(num_components, "num_components")
  _checks.check_choice(covariance_type, "covariance_type", model.COVARIANCE_TYPES)
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  num_epochs = _checks.check_positive_int(num_epochs, "num_epochs")
  _checks.check_nonnegative(reg_covar, "reg_covar")
  if not 0.5 < float(kappa) <= 1.0:
    raise ValueError(f"kappa must be in (0.5, 1] (the step sizes must sum to infinity while "
                     f"their squares do not); got {kappa}.")
  _checks.check_nonnegative(t0, "t0")
  init_size = batch_size * 10 if init_size is None else _checks.check_positive_int(
      init_size, "init_size")
  make_iter, n, d, arr = data_lib.as_source(data, sample_weight, batch_size)
  key_init, key_sub, key_perm = jax.random.split(key, 3)
  if isinstance(init, GMMParams):
    model.check_init(init, d, num_components, covariance_type)
    dtype = dtype or _checks.computed_dtype(jnp.asarray(init.means).dtype)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), init)
  else:
    xs, ws = data_lib.subsample(key_sub, data, init_size, sample_weight, batch_size=batch_size)
    dtype = dtype or _checks.computed_dtype(xs.dtype)
    params = em.fit(key_init, jnp.asarray(xs, dtype), num_components, covariance_type, init=init,
                    max_iter=0, reg_covar=reg_covar,
                    sample_weight=None if ws is None else jnp.asarray(ws, dtype)).params
  dtype = jnp.dtype(dtype)
  chunk = min(chunk_size or em.default_chunk_size(batch_size, num_components,
                                                  params.means.shape[1]), batch_size)
  state = init_state(params)
  lls = []
  rng = data_lib.numpy_rng(key_perm)

  def batches(epoch):
    if arr is None or not shuffle:
      yield from make_iter()
      return
    starts = np.arange(0, n, batch_size)
    if isinstance(arr, np.memmap):
      for s in rng.permutation(starts):
        xb = np.asarray(arr[s:s + batch_size])
        yield xb, None if sample_weight is None else np.asarray(sample_weight[s:s + batch_size])
      return
    perm = rng.permutation(n)
    for s in starts:
      idx = perm[s:s + batch_size]
      yield np.asarray(arr[idx]), None if sample_weight is None else np.asarray(
          sample_weight)[idx]

  consts = [jnp.asarray(v, dtype) for v in (kappa, t0, reg_covar)]
  for epoch in range(num_epochs):
    for xb, wb in batches(epoch):
      if epoch == 0:
        data_lib.check_batch(xb, wb, params.means.shape[1])
      if xb.shape[0] == 0:
        continue
      xp, wp = data_lib.pad_batch(xb, wb, batch_size, dtype)
      state, ll = _update_jit(state, jnp.asarray(xp), jnp.asarray(wp), *consts, chunk_size=chunk)
      lls.append(ll)
      if callback is not None:
        callback(len(lls) - 1, float(ll))
  if not lls:
    raise ValueError("The data source yielded no rows.")
  history = jnp.stack(lls)
  return OnlineFitResult(state.params, history, len(lls), state)
