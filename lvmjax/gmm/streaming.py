r"""Exact EM for data beyond memory: each iteration streams over all the data in batches.

EM's E-step statistics add over rows (:class:`lvmjax.gmm.SuffStats`), so one iteration over data
that do not fit in memory is a sum over batches, all taken with the same parameters:

.. math::

  S(\theta) = \sum_{b} S_b(\theta), \qquad \theta' = \mathrm{M}(S(\theta)),

which is exactly the in-memory iteration (up to the order of the float additions). Only one batch
and the (K, D, D) statistics are held at a time, so memory is O(batch_size · D + K · D²) whatever
N is. The data come from a NumPy array or ``numpy.memmap`` (read batch by batch with plain file
reads, so the mapped pages of a large file do not pile up in resident memory), a ``.npy`` file
path, or a callable that returns a fresh iterable of batches for each pass over the data (e.g.
reading shards from disk or a database).

The initial parameters are either given or computed by :func:`lvmjax.gmm.fit`'s initialisation
on a random subsample of ``init_size`` rows (all rows, in order, when ``init_size >= N``, which
makes the streaming fit equal the in-memory ``fit`` with the same key).

Several processes (after ``jax.distributed.initialize``): every process calls :func:`fit` (or
:func:`streamed_stats`) with its own source, e.g. a memmap of its own rows or an iterator over
its own files, and the same other arguments. Each iteration, each process sums the statistics of
its own batches on its own devices, the sums are added over the processes
(:func:`lvmjax.sharding.process_sum`: one small all-gather of the (K, D, D) statistics, no data
moves), and every process takes the same M-step. The result is the fit on the concatenation of
the processes' rows in process order, up to float rounding::

  x_mine = np.load("x.npy", mmap_mode="r")[sharding.process_rows(N)]   # or any source
  result = streaming.fit(key, x_mine, 10, batch_size=65536)            # on every process
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import mixture
# Stream sources and batch helpers live in lvmjax.data (Batches, iter_rows, npy_rows, subsample and
# subsample_processes stay importable from here).
from lvmjax.data import Batches, iter_rows, npy_rows, subsample, subsample_processes  # pylint: disable=unused-import
from lvmjax.data import as_source as _as_source
from lvmjax.gmm import em
from lvmjax.gmm import model
from lvmjax.gmm.em import GMMFitResult, SuffStats
from lvmjax.gmm.model import GMMParams


# --------------------------------------------------------------------------------------------
# One pass: the E-step statistics of all batches.



def streamed_stats(params: GMMParams, data: Any, sample_weight: ArrayLike | None = None, *,
                   batch_size: int = 65536, chunk_size: int | None = None,
                   mesh: Mesh | None = None, axis_name: str | None = None,
                   check: bool = True) -> SuffStats:
  r"""E-step statistics of all the data, summed over batches: :math:`\sum_b S_b(\theta)`.

  With several processes, ``data`` is this process's own source and the result is summed over
  the batches of all processes (every process must call this, with the same ``params``).

  Args:
    params: the E-step's parameters (the same for every batch).
    data: (N, D) array or memmap, a ``.npy`` path, or a callable returning an iterable of
      batches ((n, D) arrays or (x, sample_weight) pairs).
    sample_weight: optional (N,) weights for array data.
    batch_size: rows sent to the device at a time (the last batch is padded with weight 0, so
      one compiled function serves every batch).
    chunk_size: rows per E-step chunk on the device.
    mesh: optional device mesh: each batch is split over its ``axis_name`` axis (with several
      processes: a mesh of this process's devices).
    axis_name: the mesh's data axis.
    check: check every batch for NaN, shape and weights.

  Returns:
    The summed ``SuffStats`` (moments about ``params.means``).
  """
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  make_iter, _, d, _ = _as_source(data, sample_weight, batch_size)
  return mixture.streamed_stats(em.GaussianFamily(params.covariance_type), params, make_iter,
                                params.means.shape[1] if d is None else d, batch_size=batch_size,
                                chunk_size=chunk_size, mesh=mesh, axis_name=axis_name,
                                check=check, dtype=params.means.dtype)


def _check_same_on_all_processes(params: GMMParams) -> None:
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  leaves = [np.asarray(jax.device_get(a)) for a in jax.tree.leaves(params)]
  try:
    multihost_utils.assert_equal(leaves, "")
  except AssertionError as e:
    raise ValueError("init (the initial GMMParams) differs between the processes; every process "
                     "must start from the same parameters (e.g. computed from the same key)."
                     ) from e


# --------------------------------------------------------------------------------------------
# The fit.


def fit(key: jax.Array, data: Any, num_components: int, covariance_type: str = "full",
        init: str | GMMParams | GMMFitResult = "kmeans", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
        reg_covar: float = 1e-6, sample_weight: ArrayLike | None = None, *,
        batch_size: int = 65536, init_size: int = 100_000, init_max_iter: int = 0,
        chunk_size: int | None = None, dtype: Any = None, mesh: Mesh | None = None,
        axis_name: str | None = None,
        callback: Callable[[int, float], None] | None = None) -> GMMFitResult:
  r"""EM over data streamed in batches: exactly ``gmm.fit``'s iterations, memory flat in N.

  Every iteration sums the E-step statistics of all batches with the same parameters, then takes
  the M-step, and stops by scikit-learn's rule (the mean log-likelihood changed by less than
  ``tol``), as :func:`lvmjax.gmm.fit` does; so the result equals the in-memory fit from the
  same initial parameters (up to float rounding). Each iteration is one pass over the data: the
  host loop sends batch after batch to the device (JAX's asynchronous dispatch overlaps the
  reading of the next batch with the device's work on the current one).

  With several processes (``jax.process_count() > 1``) every process calls this with its own
  ``data`` (and ``sample_weight``) and the same other arguments; the statistics of each pass are
  summed over the processes and every process takes the same M-step, so all return the fit on
  the concatenation of the processes' rows in process order (with ``init_size`` at least the total
  number of rows, exactly the in-memory ``gmm.fit`` of that concatenation, up to float rounding).
  The initial subsample is drawn from all processes' rows (:func:`subsample_processes`: one extra
  pass over the data) and the same on every process; a given ``init`` must be the same on every
  process. A bad batch on any process raises ValueError on all of them.

  Args:
    key: PRNG key (subsample and initialisation).
    data: (N, D) NumPy array or ``numpy.memmap``, a ``.npy`` path, or a callable returning a
      fresh iterable of batches ((n, D) arrays or ``(x, sample_weight)`` pairs) per pass.
    num_components, covariance_type, max_iter, tol, reg_covar: as :func:`lvmjax.gmm.fit`.
    init: a ``GMMParams`` to start from, a ``GMMFitResult`` to continue (its history, ``n_iter``
      and convergence test carry on; ``max_iter`` counts all iterations), or an ``init`` of
      :func:`lvmjax.gmm.fit` run on a random subsample of ``init_size`` rows.
    n_init: restarts of the subsample fit (needs ``init_max_iter >= 1`` to compare them).
    sample_weight: optional (N,) weights (array data only).
    batch_size: rows per batch sent to the device.
    init_size: rows of the subsample for the initialisation (all rows when >= N; N counts the
      rows of all processes).
    init_max_iter: EM iterations on the subsample before streaming (0: its initialisation only,
      as ``gmm.fit`` starts from).
    chunk_size: rows per E-step chunk on the device.
    dtype: float dtype of the computation (default: float32, float64 when x64 is enabled and the
      data are float64).
    mesh: optional device mesh: each batch is split over its data axis (multi-device streaming).
      With several processes, a mesh of this process's own devices
      (``sharding.data_mesh(jax.local_devices())``).
    axis_name: the mesh's data axis.
    callback: optional ``callback(iteration, mean_log_likelihood)`` after each pass.

  Returns:
    ``GMMFitResult``; ``log_likelihood`` has one entry per pass.

  Raises:
    ValueError: bad arguments or data (NaN, wrong shapes), checked on the first pass.

  Examples:
    >>> import numpy as np, jax
    >>> x = np.random.default_rng(0).normal(size=(1000, 2)).astype(np.float32)
    >>> r = fit(jax.random.key(0), x, 2, batch_size=256, max_iter=5)
    >>> r.params.means.shape
    (2, 2)
  """
  _checks.check_fit_inputs(key, data, x_name="data")  # a PRNG key; float32/float64 arrays
  num_components, n_init, max_iter, tol, reg_covar = em.check_fit_options(
      num_components, covariance_type, n_init, max_iter, tol, reg_covar)
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  init_size = _checks.check_positive_int(init_size, "init_size")
  init_max_iter = _checks.check_positive_int(init_max_iter, "init_max_iter", minimum=0)
  mixture.check_mesh(mesh)
  make_iter, _, d, arr = _as_source(data, sample_weight, batch_size)

  if dtype is None and arr is not None:
    dtype = _checks.computed_dtype(arr.dtype)
  elif dtype is None and isinstance(init, (GMMParams, GMMFitResult)):
    means = init.params.means if isinstance(init, GMMFitResult) else init.means
    dtype = _checks.computed_dtype(jnp.asarray(means).dtype)
  k_init = key
  if isinstance(init, GMMFitResult):  # continue an earlier fit
    model.check_init(init.params, d, num_components, covariance_type)
    params = init
    if jax.process_count() > 1:
      _check_same_on_all_processes(init.params)
  elif isinstance(init, GMMParams):
    model.check_init(init, d, num_components, covariance_type)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), init)
    if jax.process_count() > 1:
      _check_same_on_all_processes(params)
  else:
    if not isinstance(init, str) or init not in em.INITS:
      raise ValueError(f"Unknown init {init!r}; expected one of "
                       f"{', '.join(map(repr, em.INITS))}, a gmm.GMMParams or a "
                       "gmm.GMMFitResult to continue.")
    if n_init > 1 and init_max_iter == 0:
      raise ValueError("n_init > 1 compares the restarts by their log-likelihood on the "
                       "subsample after init_max_iter EM iterations; set init_max_iter >= 1.")
    draw = subsample if jax.process_count() == 1 else subsample_processes
    xs, ws = draw(jax.random.fold_in(key, 1), data, init_size, sample_weight,
                  batch_size=batch_size)
    dtype = _checks.computed_dtype(xs.dtype) if dtype is None else dtype
    params = em.fit(k_init, jnp.asarray(xs, dtype), num_components, covariance_type, init=init,
                    n_init=n_init, max_iter=init_max_iter, tol=tol, reg_covar=reg_covar,
                    sample_weight=None if ws is None else jnp.asarray(ws, dtype),
                    chunk_size=chunk_size).params
  dtype = jnp.dtype(dtype)
  family = em.GaussianFamily(covariance_type, jnp.asarray(reg_covar, dtype))
  result = mixture.fit_streaming(
      family, params, make_iter, num_features=(
          (params.params if isinstance(params, GMMFitResult) else params).means.shape[1]
          if d is None else d),
      max_iter=max_iter, tol=tol, batch_size=batch_size, chunk_size=chunk_size, mesh=mesh,
      axis_name=axis_name, dtype=dtype, callback=callback)
  history = result.log_likelihood
  if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(result.params)) or (
      history.shape[0] and not np.isfinite(float(history[-1]))):
    raise ValueError(
        "Fitting the mixture model failed because some components have ill-defined empirical "
        "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
        "the number of components, or increase reg_covar.")
  return GMMFitResult(*result)
