"""Several processes (multi-host): which rows each loads, joining them, and sums over processes."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax.sharding.layout import layout_for
from lvmjax.sharding.layout import pad_rows
from lvmjax.sharding.layout import shard_rows
from lvmjax.sharding.mesh import DATA_AXIS
from lvmjax.sharding.mesh import is_global
from lvmjax.sharding.mesh import row_sharding


def process_rows(num_points: int, process_index: int | None = None,
                 process_count: int | None = None, *, multiple: int = 1) -> slice:
  """The contiguous block of rows that process ``process_index`` should load.

  Blocks hold ``multiple * ceil(N / (process_count * multiple))`` rows (the last ones fewer, or
  none); together they cover ``range(num_points)`` in order, so the rows joined by
  ``rows_from_processes`` are the global data set in its original order. With ``multiple`` the
  number of devices per process (``jax.local_device_count()``) every process but the last with
  rows fills its devices exactly, so the padding that ``rows_from_processes`` adds lies at the end
  of the global array, where ``shard_rows`` of the whole data would put it (same layout).

  Examples:
    >>> process_rows(10, 1, 3)
    slice(4, 8, None)
    >>> process_rows(10, 1, 2, multiple=4)
    slice(8, 10, None)
  """
  p = jax.process_index() if process_index is None else process_index
  c = jax.process_count() if process_count is None else process_count
  per = multiple * -(-num_points // (c * multiple))
  return slice(min(p * per, num_points), min((p + 1) * per, num_points))


def process_share(rows: int | np.ndarray, *, multiple: int | None = None) -> slice | np.ndarray:
  """This process's share of the rows of a data set, to pass to ``data.load_dataset(rows=...)``.

  Args:
    rows: the number of rows N, or a sorted array of the row indices in use (e.g. a random
      subset from ``data.random_subset``).
    multiple: as :func:`process_rows`; default ``jax.local_device_count()``.

  Returns:
    With one process, ``slice(0, N)`` or the whole index array; with several, this process's
    block of them (:func:`process_rows`).
  """
  multiple = jax.local_device_count() if multiple is None else multiple
  if isinstance(rows, (int, np.integer)):
    return process_rows(int(rows), multiple=multiple)
  rows = np.asarray(rows)
  return rows[process_rows(len(rows), multiple=multiple)]


def _allgather_host(a: np.ndarray) -> np.ndarray:
  """(P, *a.shape): every process's ``a`` (same shape and dtype everywhere), bit for bit.

  The values travel as raw bytes, so float64 and int64 survive without ``jax_enable_x64``.
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  shape = np.shape(a)
  a = np.ascontiguousarray(a)  # (note: at least 1-D)
  if a.size == 0:
    return np.zeros((jax.process_count(),) + shape, a.dtype)
  raw = a.reshape(-1).view(np.uint8)
  got = np.asarray(multihost_utils.process_allgather(raw))
  return got.reshape(jax.process_count(), -1).view(a.dtype).reshape((-1,) + shape)


def process_sum(tree: Any) -> Any:
  """Sums a pytree of host numbers or arrays over all processes (every process must call it).

  Floats are added in float64 and integers in int64, in process order, so every process gets
  the same bits. With one process the values come back (as float64 / int64 NumPy values).

  Examples:
    >>> float(process_sum(2.5))
    2.5
  """
  leaves, treedef = jax.tree.flatten(tree)
  wide = [np.asarray(v, np.float64 if np.issubdtype(np.asarray(v).dtype, np.floating)
                     else np.int64) for v in leaves]
  if jax.process_count() > 1 and wide:
    sums = {}
    for dtype in (np.float64, np.int64):
      part = [w.reshape(-1) for w in wide if w.dtype == dtype]
      total = _allgather_host(np.concatenate(part or [np.zeros(0, dtype)])).sum(0)
      sums[dtype] = iter(np.split(total, np.cumsum([q.size for q in part])[:-1]) if part else [])
    wide = [next(sums[w.dtype.type]).reshape(w.shape) for w in wide]
  return jax.tree.unflatten(treedef, [w[()] if w.ndim == 0 else w for w in wide])


def process_concat(local: ArrayLike) -> np.ndarray:
  """Joins every process's rows (any number each) along axis 0, in process order.

  With blocks from :func:`process_rows`, the result is the global array in its original order
  (e.g. the labels of all points, for a metric that is not a sum over points, such as the
  adjusted Rand index). Every process must call it; each gets the whole result, so use it for
  small per-point values. With one process the array comes back.
  """
  local = np.asarray(local)
  if jax.process_count() == 1:
    return local
  counts = _allgather_host(np.asarray(local.shape[0], np.int64))
  most = int(counts.max())
  pad = np.zeros((most - local.shape[0],) + local.shape[1:], local.dtype)
  got = _allgather_host(np.concatenate([local, pad]))
  return np.concatenate([got[p, :int(counts[p])] for p in range(len(counts))])


def rows_from_processes(local_x: ArrayLike, mesh: Mesh, local_weight: ArrayLike | None = None, *,
                        axis_name: str = DATA_AXIS, multiple: int = 1
                        ) -> tuple[jax.Array, jax.Array]:
  """Joins every process's own rows into one global row-sharded array (multi-host).

  Each process passes the rows it loaded (e.g. ``x[process_rows(N)]`` read from its own file
  or memmap). The processes agree on a common row count (``process_allgather`` of the local
  counts), each pads its rows with weight-0 rows to that count, and
  ``jax.make_array_from_process_local_data`` assembles the global array, whose blocks stay on
  the devices of the process that loaded them. Every process must call this (it communicates).
  With one process it equals ``shard_rows``. With blocks from
  ``process_rows(N, multiple=jax.local_device_count())`` all the padding is at the end, so the
  global array is laid out as ``shard_rows`` of the whole data would be.

  Args:
    local_x: (n_p, ...) this process's rows.
    mesh: a mesh over the devices of all processes (``data_mesh()``).
    local_weight: optional (n_p,) weights of these rows.
    axis_name: the data axis.
    multiple: rows per device are a multiple of this.

  Returns:
    ``(x_global, weight_global)``: (P * rows_per_process, ...) arrays with row sharding. Row
    order: process 0's rows (then its padding), process 1's rows, ...
  """
  if jax.process_count() == 1:
    return shard_rows(local_x, mesh, local_weight, axis_name=axis_name, multiple=multiple)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local_x = np.asarray(local_x)
  n = local_x.shape[0]
  counts = np.asarray(multihost_utils.process_allgather(np.asarray(n, np.int64)))
  local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
  per_process = layout_for(int(counts.max()), local_devices, multiple).padded_rows
  dtype = local_x.dtype if np.issubdtype(local_x.dtype, np.floating) else np.float32
  w = np.ones(n, dtype) if local_weight is None else np.asarray(local_weight, dtype)
  spec = row_sharding(mesh, axis_name)
  xg = jax.make_array_from_process_local_data(spec, pad_rows(local_x, per_process))
  wg = jax.make_array_from_process_local_data(spec, pad_rows(w, per_process))
  return xg, wg


def check_local_values(x: Any, name: str = "x") -> None:
  """Checks that the shards of ``x`` this process holds are finite (multi-host input checks)."""
  for shard in x.addressable_shards:
    arr = np.asarray(shard.data)
    if not np.all(np.isfinite(arr)):
      raise ValueError(f"{name} contains NaN or infinite values (in the rows of process "
                       f"{jax.process_index()}). Remove or impute them before fitting.")


class ShapeOnly:
  """Stands in for an array in the shape checks when only its shape is known.

  A global multi-process array's values live partly on other processes; ``ShapeOnly(x.shape)``
  passes ``_checks.check_data``'s shape tests and has one finite value.

  Examples:
    >>> ShapeOnly((10, 3)).shape
    (10, 3)
  """

  def __init__(self, shape: tuple[int, ...]):
    self.shape = tuple(shape)

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    return np.zeros((1,) * len(self.shape), dtype or np.float32)


def check_data(x: Any, name: str = "x") -> None:
  """``check_data`` of a fit's rows, also for a global multi-process array.

  A global array is checked by its shape and by the values this process holds; anything else
  by ``lvmjax._checks.check_data``.

  Raises:
    ValueError: not 2-D, no rows, or NaN / infinite values.
  """
  if is_global(x):
    _checks.check_data(ShapeOnly(x.shape), name)
    check_local_values(x, name)
  else:
    _checks.check_data(x, name)


def check_sample_weight(sample_weight: Any, num_points: int) -> None:
  """``check_sample_weight``, also for a global multi-process array (its shape, local values).

  Raises:
    ValueError: wrong shape, or (for host arrays) negative, non-finite or all-zero weights.
  """
  if is_global(sample_weight):
    if np.shape(sample_weight) != (num_points,):
      raise ValueError(f"sample_weight must have shape ({num_points},), one weight per row of x; "
                       f"got {np.shape(sample_weight)}.")
    check_local_values(sample_weight, "sample_weight")
  else:
    _checks.check_sample_weight(sample_weight, num_points)
