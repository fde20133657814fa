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

import functools
import mmap
import os
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import sharding
from lvmjax.gmm import em
from lvmjax.gmm import model
from lvmjax.gmm.em import GMMFitResult, SuffStats
from lvmjax.gmm.model import GMMParams

Batches = Callable[[], Iterable[Any]]


# --------------------------------------------------------------------------------------------
# Reading batches.


def _memmap_source(mm: Any):
  """(path, byte offset, dtype, shape) of a C-contiguous 2-D memmap that owns its mapping."""
  if (isinstance(mm, np.memmap) and isinstance(mm.base, mmap.mmap) and mm.ndim == 2
      and mm.flags.c_contiguous and getattr(mm, "filename", None)):
    return mm.filename, int(mm.offset), mm.dtype, mm.shape
  return None


def iter_rows(x: Any, batch_size: int, start: int = 0, stop: int | None = None
              ) -> Iterator[np.ndarray]:
  """Yields consecutive row blocks ``x[i:i + batch_size]`` of an array as NumPy arrays.

  A C-contiguous ``numpy.memmap`` is read with plain file reads (``np.fromfile``), not through
  the mapping, so resident memory stays at one batch however large the file is.
  """
  stop = x.shape[0] if stop is None else stop
  src = _memmap_source(x)
  if src is None:
    for i in range(start, stop, batch_size):
      yield np.asarray(x[i:min(i + batch_size, stop)])
    return
  path, offset, dtype, shape = src
  row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
  with open(path, "rb") as f:
    for i in range(start, stop, batch_size):
      m = min(i + batch_size, stop) - i
      f.seek(offset + i * row_bytes)
      yield np.fromfile(f, dtype, count=m * shape[1]).reshape(m, shape[1])


def npy_rows(path: str | os.PathLike) -> np.memmap:
  """Opens a ``.npy`` file of shape (N, D) as a read-only memmap (no data are read)."""
  return np.load(os.fspath(path), mmap_mode="r")


def _as_source(data: Any, sample_weight: Any, batch_size: int):
  """(make_iter, num_points or None, num_features or None, row_access or None)."""
  if isinstance(data, (str, os.PathLike)):
    data = npy_rows(data)
  if callable(data) and not hasattr(data, "shape"):
    if sample_weight is not None:
      raise ValueError("With a callable data source, yield (x, sample_weight) pairs from it "
                       "instead of passing sample_weight.")

    def make_iter():
      for item in data():
        if isinstance(item, tuple):
          xb, wb = item
        else:
          xb, wb = item, None
        xb = np.asarray(xb)
        for i in range(0, xb.shape[0], batch_size):  # split oversized batches
          yield xb[i:i + batch_size], None if wb is None else np.asarray(wb)[i:i + batch_size]
    return make_iter, None, None, None
  if not hasattr(data, "shape") or len(data.shape) != 2:
    raise ValueError("data must be a 2-D array or memmap (N, D), a path to a .npy file, or a "
                     f"callable returning an iterable of (n, D) batches; got {type(data)!r}.")
  n, d = data.shape
  if sample_weight is not None and np.shape(sample_weight) != (n,):
    raise ValueError(f"sample_weight must have shape ({n},), one weight per row of x; got "
                     f"{np.shape(sample_weight)}.")

  def make_iter():
    for i, xb in enumerate(iter_rows(data, batch_size)):
      yield xb, None if sample_weight is None else np.asarray(
          sample_weight[i * batch_size:i * batch_size + xb.shape[0]])
  return make_iter, n, d, data


def _check_batch(xb, wb, d):
  if xb.ndim != 2 or (d is not None and xb.shape[1] != d):
    raise ValueError(f"Every batch must have shape (n, {d if d is not None else 'D'}); got "
                     f"{xb.shape}.")
  _checks.check_data(xb, "a batch of x")
  if wb is not None:
    _checks.check_sample_weight(wb, xb.shape[0])


# --------------------------------------------------------------------------------------------
# One pass: the E-step statistics of all batches.


def _pad_batch(xb, wb, batch_size, dtype):
  m = xb.shape[0]
  w = np.ones(m, dtype) if wb is None else np.asarray(wb, dtype)
  xb = np.asarray(xb, dtype)
  if m < batch_size:
    xb = np.concatenate([xb, np.zeros((batch_size - m, xb.shape[1]), dtype)])
    w = np.concatenate([w, np.zeros(batch_size - m, dtype)])
  return xb, w


@functools.partial(jax.jit, static_argnames=("chunk_size",), donate_argnums=(0,))
def _accumulate(acc: SuffStats, params: GMMParams, x, w, *, chunk_size):
  xs, ws = em._chunks(x, w, chunk_size)  # pylint: disable=protected-access
  stats = em._em_stats(xs, ws, params)  # pylint: disable=protected-access
  return jax.tree.map(jnp.add, acc, stats)


@functools.partial(jax.jit, static_argnames=("chunk_size", "mesh", "axis_name"),
                   donate_argnums=(0,))
def _accumulate_sharded(acc: SuffStats, params: GMMParams, x, w, *, chunk_size, mesh, axis_name):
  spec = P(axis_name)

  def local(params, x, w):
    xs, ws = em._chunks(x, w, chunk_size)  # pylint: disable=protected-access
    stats = em._em_stats(xs, ws, params)  # pylint: disable=protected-access
    return jax.lax.psum(stats, axis_name)

  stats = jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec), out_specs=P(),
                        check_vma=False)(params, x, w)
  return jax.tree.map(jnp.add, acc, stats)


_m_step = jax.jit(em.m_step)


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
  _check_mesh(mesh)
  make_iter, _, d, _ = _as_source(data, sample_weight, batch_size)
  return _pass(params, make_iter, d, batch_size, chunk_size, mesh, axis_name, check,
               params.means.dtype)


def _local_pass(params, make_iter, d, batch_size, chunk_size, mesh, axis_name, check, dtype):
  """(statistics of this process's batches, number of rows read)."""
  k, dd = params.means.shape
  placement = None if mesh is None else sharding.mesh_of(None, mesh, axis_name)
  if placement is None:
    chunk = min(chunk_size or em.default_chunk_size(batch_size, k, dd), batch_size)
    rows = -(-batch_size // chunk) * chunk
  else:
    shards = sharding.num_shards(*placement)
    chunk = min(chunk_size or em.default_chunk_size(batch_size, k, dd), -(-batch_size // shards))
    rows = sharding.layout_for(batch_size, shards, chunk).padded_rows
    spec = sharding.row_sharding(*placement)
  acc = em._zero_stats(k, dd, params.covariance_type, dtype)  # pylint: disable=protected-access
  seen = 0
  for xb, wb in make_iter():
    if check:
      _check_batch(xb, wb, dd if d is None else d)
    if xb.shape[0] == 0:
      continue
    seen += xb.shape[0]
    xp, wp = _pad_batch(xb, wb, rows, dtype)
    if placement is None:
      acc = _accumulate(acc, params, jnp.asarray(xp), jnp.asarray(wp), chunk_size=chunk)
    else:
      acc = _accumulate_sharded(acc, params, jax.device_put(xp, spec), jax.device_put(wp, spec),
                                chunk_size=chunk, mesh=placement[0], axis_name=placement[1])
  return acc, seen


def _pass(params, make_iter, d, batch_size, chunk_size, mesh, axis_name, check, dtype):
  """Statistics of all batches: this process's, or with several processes, all processes'."""
  if jax.process_count() == 1:
    acc, seen = _local_pass(params, make_iter, d, batch_size, chunk_size, mesh, axis_name, check,
                            dtype)
    if seen == 0:
      raise ValueError("The data source yielded no rows.")
    return acc
  # Several processes: a bad batch on one process must stop all of them (not leave the others
  # waiting in the all-gather), so the error travels as a flag with the statistics.
  error = None
  try:
    acc, seen = _local_pass(params, make_iter, d, batch_size, chunk_size, mesh, axis_name, check,
                            dtype)
  except Exception as e:  # pylint: disable=broad-except
    error, seen = e, 0
    k, dd = params.means.shape
    acc = em._zero_stats(k, dd, params.covariance_type, dtype)  # pylint: disable=protected-access
  stats, seen, failed = sharding.process_sum((tuple(np.asarray(v) for v in jax.device_get(acc)),
                                              seen, int(error is not None)))
  if error is not None:
    raise error
  if failed:
    raise ValueError(f"{failed} other process(es) found bad data in their batches (see their "
                     "errors); this process's batches were fine.")
  if seen == 0:
    raise ValueError("The data sources of all processes yielded no rows.")
  return SuffStats(*(jnp.asarray(v, dtype) for v in stats))


def _check_mesh(mesh: Mesh | None) -> None:
  if mesh is None or jax.process_count() == 1:
    return
  me = jax.process_index()
  if any(dev.process_index != me for dev in mesh.devices.flat):
    raise ValueError("With several processes each one streams its own batches on its own "
                     "devices, so the mesh must hold only this process's devices, e.g. "
                     "mesh=lvmjax.sharding.data_mesh(jax.local_devices()) (or mesh=None).")


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
# Initialisation from a subsample.


def _rng(key) -> np.random.Generator:
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def subsample(key: jax.Array, data: Any, size: int, sample_weight: ArrayLike | None = None, *,
              batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray | None]:
  """A uniform random subsample of ``size`` rows (without replacement), in their original order.

  Array data are indexed directly; a callable source is read in one pass, keeping the rows of
  the ``size`` smallest random priorities (a reservoir). With ``size >= N`` all rows are
  returned in order.

  Returns:
    ``(x_sub, w_sub)``; ``w_sub`` is None when there are no weights.
  """
  size = _checks.check_positive_int(size, "size")
  make_iter, n, _, arr = _as_source(data, sample_weight, batch_size)
  rng = _rng(key)
  if arr is not None:
    if size >= n:
      parts = list(make_iter())
      xs = np.concatenate([p[0] for p in parts])
      ws = None if sample_weight is None else np.concatenate([p[1] for p in parts])
      return xs, ws
    idx = np.sort(rng.choice(n, size, replace=False))
    xs = np.asarray(arr[idx])
    return xs, None if sample_weight is None else np.asarray(sample_weight)[idx]
  xs, ws, _ = _reservoir(make_iter, size, rng)
  if xs is None:
    raise ValueError("The data source yielded no rows.")
  return xs, ws


def _reservoir(make_iter, size, rng):
  """One pass keeping the rows of the ``size`` smallest uniform priorities, in their order.

  Returns ``(x, w or None, priorities)``, or ``(None, None, None)`` when there were no batches.
  """
  keep_x, keep_w, keep_p = [], [], []
  for xb, wb in make_iter():
    keep_x.append(np.asarray(xb))
    keep_w.append(None if wb is None else np.asarray(wb))
    keep_p.append(rng.random(xb.shape[0]))
    if sum(len(q) for q in keep_p) > 2 * size:  # prune to the size smallest priorities
      allp = np.concatenate(keep_p)
      sel = np.sort(np.argpartition(allp, size)[:size])
      keep_x = [np.concatenate(keep_x)[sel]]
      keep_w = [None if keep_w[0] is None else np.concatenate(keep_w)[sel]]
      keep_p = [allp[sel]]
  if not keep_x:
    return None, None, None
  allp = np.concatenate(keep_p)
  xs = np.concatenate(keep_x)
  ws = None if keep_w[0] is None else np.concatenate(keep_w)
  if allp.size > size:
    sel = np.sort(np.argpartition(allp, size)[:size])
    xs, ws, allp = xs[sel], None if ws is None else ws[sel], allp[sel]
  return xs, ws, allp


def subsample_processes(key: jax.Array, data: Any, size: int,
                        sample_weight: ArrayLike | None = None, *,
                        batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray | None]:
  """:func:`subsample` of the union of every process's ``data`` (each process passes its own).

  Each process reads its source once, giving every row a uniform random priority (drawn from
  ``key`` and the process index) and keeping its ``size`` smallest; the ``size`` smallest of all
  processes' priorities pick the rows, so the subsample is uniform over all rows. Every process
  gets the same rows, in process order and then in their order within the process. With
  ``size >=`` the total number of rows that is all rows, in order: the concatenation of the
  processes' data. Every process must call this.

  Returns:
    ``(x_sub, w_sub)``; ``w_sub`` is None when no process has weights.
  """
  size = _checks.check_positive_int(size, "size")
  make_iter, _, _, _ = _as_source(data, sample_weight, batch_size)
  xs, ws, pr = _reservoir(make_iter, size,
                          _rng(jax.random.fold_in(key, jax.process_index())))
  bad = xs is not None and xs.ndim != 2
  # What each process holds: rows, features, dtype, weights (so that empty ones can join in),
  # and whether its batches have the wrong shape (all processes raise then, none waits).
  info = sharding.process_concat(np.array([[
      0 if xs is None else len(xs), -1 if xs is None or bad else xs.shape[1],
      0 if xs is None else ord(xs.dtype.char), int(ws is not None), int(bad)]], np.int64))
  if info[:, 4].any():
    raise ValueError("Every batch must have shape (n, D); the batches of process(es) "
                     f"{np.flatnonzero(info[:, 4]).tolist()} do not.")
  if info[:, 0].sum() == 0:
    raise ValueError("The data sources of all processes yielded no rows.")
  first = info[int(np.argmax(info[:, 0] > 0))]
  dim, dtype, weighted = int(first[1]), np.dtype(chr(int(first[2]))), bool(info[:, 3].any())
  if xs is None:
    xs, pr = np.zeros((0, dim), dtype), np.zeros(0)
  if weighted and ws is None:
    ws = np.ones(len(xs))
  keep = np.ones(len(pr), bool)
  everyone = sharding.process_concat(pr)
  if everyone.size > size:
    keep = pr <= np.partition(everyone, size - 1)[size - 1]
  x_sub = sharding.process_concat(np.asarray(xs[keep], dtype))
  w_sub = sharding.process_concat(np.asarray(ws[keep], np.float64)) if weighted else None
  return x_sub, w_sub


# --------------------------------------------------------------------------------------------
# The fit.


def fit(key: jax.Array, data: Any, num_components: int, covariance_type: str = "full",
        init: str | GMMParams = "kmeans", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
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
    init: a ``GMMParams`` to start from, or an ``init`` of :func:`lvmjax.gmm.fit` run on a random
      subsample of ``init_size`` rows.
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
  num_components, n_init, max_iter, tol, reg_covar = em.check_fit_options(
      num_components, covariance_type, n_init, max_iter, tol, reg_covar)
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  init_size = _checks.check_positive_int(init_size, "init_size")
  init_max_iter = _checks.check_positive_int(init_max_iter, "init_max_iter", minimum=0)
  _check_mesh(mesh)
  make_iter, _, d, arr = _as_source(data, sample_weight, batch_size)

  def default_dtype(a):
    a = jnp.dtype(a)
    return jnp.result_type(a if jnp.issubdtype(a, jnp.floating) else float)

  if dtype is None and arr is not None:
    dtype = default_dtype(arr.dtype)
  elif dtype is None and isinstance(init, GMMParams):
    dtype = default_dtype(jnp.asarray(init.means).dtype)
  k_init = key
  if isinstance(init, GMMParams):
    model.check_init(init, d, num_components, covariance_type)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), init)
    if jax.process_count() > 1:
      _check_same_on_all_processes(params)
  else:
    if not isinstance(init, str) or init not in em.INITS:
      raise ValueError(f"Unknown init {init!r}; expected one of "
                       f"{', '.join(map(repr, em.INITS))} or a gmm.GMMParams.")
    if n_init > 1 and init_max_iter == 0:
      raise ValueError("n_init > 1 compares the restarts by their log-likelihood on the "
                       "subsample after init_max_iter EM iterations; set init_max_iter >= 1.")
    draw = subsample if jax.process_count() == 1 else subsample_processes
    xs, ws = draw(jax.random.fold_in(key, 1), data, init_size, sample_weight,
                  batch_size=batch_size)
    dtype = default_dtype(xs.dtype) if dtype is None else dtype
    params = em.fit(k_init, jnp.asarray(xs, dtype), num_components, covariance_type, init=init,
                    n_init=n_init, max_iter=init_max_iter, tol=tol, reg_covar=reg_covar,
                    sample_weight=None if ws is None else jnp.asarray(ws, dtype),
                    chunk_size=chunk_size).params
  dtype = jnp.dtype(dtype)
  reg = jnp.asarray(reg_covar, dtype)
  history = []
  lower_bound = -np.inf
  converged = False
  for it in range(max_iter):
    stats = _pass(params, make_iter, d, batch_size, chunk_size, mesh, axis_name, it == 0, dtype)
    ll = float(stats.log_likelihood / stats.total_weight)
    params = _m_step(params, stats, reg)
    history.append(ll)
    if callback is not None:
      callback(it, ll)
    converged = abs(ll - lower_bound) < tol
    lower_bound = ll
    if not np.isfinite(ll):
      break
    if converged:
      break
  if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(params)) or (
      history and not np.isfinite(history[-1])):
    raise ValueError(
        "Fitting the mixture model failed because some components have ill-defined empirical "
        "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
        "the number of components, or increase reg_covar.")
  return GMMFitResult(params, jnp.asarray(history, dtype), jnp.asarray(len(history), jnp.int32),
                      jnp.asarray(converged), jnp.asarray(lower_bound, dtype))
