r"""Stream sources: data read in batches (arrays, memmaps, ``.npy`` files, callables), and subsamples.

Streaming EM, online EM and mini-batch K-means all read their data through :func:`as_source`,
which turns any of

* an (N, D) NumPy array or ``numpy.memmap`` (a C-contiguous memmap is read with plain file reads,
  so resident memory stays at one batch however large the file is),
* the path of an (N, D) ``.npy`` file (opened as a memmap, :func:`npy_rows`),
* a callable returning a fresh iterable of (n, D) batches or ``(x, sample_weight)`` pairs for
  each pass over the data,

into a function that yields ``(x_batch, w_batch or None)`` pairs of at most ``batch_size`` rows.
:func:`check_batch` checks a batch at the door and :func:`pad_batch` pads the last one with
weight-0 rows, so one compiled step serves every batch. :func:`subsample` draws a uniform random
subsample of a source (a reservoir for callables), :func:`subsample_processes` the same over the
sources of several processes.

Examples:
  >>> import numpy as np
  >>> make_iter, n, d, _ = as_source(np.zeros((5, 2)), None, batch_size=2)
  >>> [xb.shape[0] for xb, _ in make_iter()]
  [2, 2, 1]
"""
from __future__ import annotations

import mmap
import os
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import sharding

#: A callable that returns a fresh iterable of batches for each pass over the data.
Batches = Callable[[], Iterable[Any]]
#: What :func:`as_source` returns: ``(make_iter, num_points or None, num_features or None,
#: row-indexable array or None)``.
Source = tuple[Callable[[], Iterator[tuple[np.ndarray, np.ndarray | None]]], "int | None",
               "int | None", Any]


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

  Args:
    x: (N, ...) array or memmap.
    batch_size: rows per block.
    start: first row.
    stop: one past the last row (default N).

  Yields:
    (m, ...) NumPy blocks, ``m <= batch_size``.

  Examples:
    >>> [b.shape for b in iter_rows(np.zeros((5, 2)), 3)]
    [(3, 2), (2, 2)]
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


def as_source(data: Any, sample_weight: Any, batch_size: int) -> Source:
  """Any supported data source as a function that yields ``(x_batch, w_batch or None)``.

  Args:
    data: (N, D) array or memmap, a ``.npy`` path, or a callable returning a fresh iterable of
      (n, D) batches or ``(x, sample_weight)`` pairs (oversized batches are split).
    sample_weight: optional (N,) weights, for array data only.
    batch_size: rows per yielded batch (at most).

  Returns:
    ``(make_iter, num_points, num_features, array)``: ``make_iter()`` starts a pass over the
    data; the other three are None for a callable source (its size is unknown before a pass),
    else N, D and the row-indexable array (memmap for a path).

  Raises:
    ValueError: data of another kind or not 2-D, weights with a callable source, or weights of
      the wrong shape.
  """
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


def check_batch(xb: np.ndarray, wb: np.ndarray | None, num_features: int | None) -> None:
  """Checks one batch of a stream: (n, D), finite, and valid weights.

  Raises:
    ValueError: wrong shape, NaN or infinite values, or bad weights.
  """
  if xb.ndim != 2 or (num_features is not None and xb.shape[1] != num_features):
    want = num_features if num_features is not None else "D"
    raise ValueError(f"Every batch must have shape (n, {want}); got {xb.shape}.")
  _checks.check_data(xb, "a batch of x")
  if wb is not None:
    _checks.check_sample_weight(wb, xb.shape[0])


def pad_batch(xb: ArrayLike, wb: ArrayLike | None, batch_size: int,
              dtype: Any) -> tuple[np.ndarray, np.ndarray]:
  """A batch and its weights as ``dtype``, padded with weight-0 zero rows to ``batch_size`` rows.

  Examples:
    >>> xp, wp = pad_batch(np.ones((2, 3)), None, 4, np.float32)
    >>> xp.shape, wp.tolist()
    ((4, 3), [1.0, 1.0, 0.0, 0.0])
  """
  m = np.shape(xb)[0]
  w = np.ones(m, dtype) if wb is None else np.asarray(wb, dtype)
  xb = np.asarray(xb, dtype)
  if m < batch_size:
    xb = np.concatenate([xb, np.zeros((batch_size - m, xb.shape[1]), dtype)])
    w = np.concatenate([w, np.zeros(batch_size - m, dtype)])
  return xb, w


def numpy_rng(key: jax.Array) -> np.random.Generator:
  """A NumPy generator seeded by the bits of a JAX key (for host-side draws over a stream)."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def subsample(key: jax.Array, data: Any, size: int, sample_weight: ArrayLike | None = None, *,
              batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray | None]:
  """A uniform random subsample of ``size`` rows (without replacement), in their original order.

  Array data are indexed directly; a callable source is read in one pass, keeping the rows of
  the ``size`` smallest random priorities (a reservoir). With ``size >= N`` all rows are
  returned in order.

  Args:
    key: PRNG key.
    data: any source of :func:`as_source`.
    size: rows to keep.
    sample_weight: optional (N,) weights (array data).
    batch_size: rows per read.

  Returns:
    ``(x_sub, w_sub)``; ``w_sub`` is None when there are no weights.

  Raises:
    ValueError: ``size < 1``, a bad source, or a source that yields no rows.
  """
  size = _checks.check_positive_int(size, "size")
  make_iter, n, _, arr = as_source(data, sample_weight, batch_size)
  rng = numpy_rng(key)
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

  Raises:
    ValueError: on every process, when any process's batches are not 2-D or no process has rows.
  """
  size = _checks.check_positive_int(size, "size")
  make_iter, _, _, _ = as_source(data, sample_weight, batch_size)
  xs, ws, pr = _reservoir(make_iter, size,
                          numpy_rng(jax.random.fold_in(key, jax.process_index())))
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
