"""Device meshes and row-sharded data: how the fits scale over devices and hosts.

lvmjax scales on JAX's own runtime: a ``jax.sharding.Mesh`` whose data axis splits the rows of
``x``, and ``jax.distributed`` for several processes. The EM and Lloyd iterations are sums of
per-row statistics, so a sharded fit runs each device's rows locally and adds the statistics
with one ``psum`` per iteration; parameters stay replicated. This module has the pieces to put
data on a mesh::

  mesh = sharding.data_mesh()                        # all devices, axis "data"
  x_s, w_s = sharding.shard_rows(x, mesh)            # pad to a multiple, weight 0 on padding
  result = gmm.fit(key, x_s, 10, sample_weight=w_s)  # detects the sharding of x_s
  result = gmm.fit(key, x, 10, mesh=mesh)            # or: gmm.fit shards x itself

On several hosts (after ``jax.distributed.initialize``) each process loads only its own rows
(``process_rows``; ``data.load_dataset(..., rows=...)`` reads just those from the file) and
``rows_from_processes`` joins them into one global array. Numbers over all rows that are not
computed on the global array come from per-process parts: ``process_sum`` adds sums (e.g. of
log-likelihoods) and ``process_concat`` gathers small per-row values (e.g. labels).

On a multi-core CPU, JAX's one CPU device threads only large matrix products; the rest of an EM or
Lloyd iteration runs on one core. :func:`use_cpu_cores` (called first thing, before any JAX
computation) gives JAX one host device per core, and a fit over ``data_mesh()`` then runs each
core's rows on its own thread: on a 2-core CPU, 1.7x the one-device EM speed and 1.55x K-means'
(``python -m experiments.benchmark_gmm``)::

  sharding.use_cpu_cores()                           # before the first JAX computation
  result = gmm.fit(key, x, 10, mesh=sharding.data_mesh())

Padding rows carry ``sample_weight`` 0, so they change no statistic; the fits that take a
``mesh`` pad internally and also exclude the padding from the unweighted quantities (K-means'
centring and tolerance), so a sharded fit equals the fit on one device up to float rounding.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jax.typing import ArrayLike

DATA_AXIS = "data"


def use_cpu_cores(num_devices: int | None = None) -> int:
  """Makes JAX create ``num_devices`` host CPU devices (default: one per core).

  Sets ``jax_num_cpu_devices``, which JAX reads when it creates its CPU backend, so call it right
  after ``import jax``, before any JAX computation. Fits over ``data_mesh()`` then run each
  device's rows on its own thread (see the module docstring); with one device per core nothing
  else changes, and arrays not put on the mesh stay on device 0. Known problem: full-covariance GMM
  fits with D >= 64 hang on such a mesh (``gmm.fit`` refuses them with a ValueError).

  Args:
    num_devices: number of CPU devices; None: ``os.cpu_count()``.

  Returns:
    The number of CPU devices requested.

  Raises:
    ValueError: ``num_devices < 1``, or JAX has already run a computation (too late to change
      the number of CPU devices; call this first thing in the program).
  """
  n = (os.cpu_count() or 1) if num_devices is None else int(num_devices)
  if n < 1:
    raise ValueError(f"num_devices must be >= 1, got {num_devices}.")
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError as e:
    raise ValueError("use_cpu_cores() must run before the first JAX computation (JAX has created "
                     "its CPU backend already); call it right after `import jax`.") from e
  return n


def data_mesh(devices: Any = None, axis_name: str = DATA_AXIS) -> Mesh:
  """A one-dimensional mesh over ``devices`` (default: all devices of all processes).

  Args:
    devices: a sequence of devices, e.g. ``jax.devices()[:4]``; None for ``jax.devices()``.
    axis_name: the name of the data axis.

  Returns:
    ``Mesh(devices, (axis_name,))``.

  Examples:
    >>> mesh = data_mesh()
    >>> mesh.axis_names
    ('data',)
  """
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (axis_name,))


def row_sharding(mesh: Mesh, axis_name: str = DATA_AXIS) -> NamedSharding:
  """``NamedSharding`` that splits the leading (row) axis over ``axis_name``."""
  return NamedSharding(mesh, P(axis_name))


def replicated(mesh: Mesh) -> NamedSharding:
  """``NamedSharding`` that keeps a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, P())


def num_shards(mesh: Mesh, axis_name: str = DATA_AXIS) -> int:
  """Number of devices along ``axis_name``."""
  return int(mesh.shape[axis_name])


class RowLayout(NamedTuple):
  """How rows lie on the devices of a sharded fit (all static).

  Device ``j`` (position ``j`` along the data axis) holds global rows
  ``[j * block_rows, (j + 1) * block_rows)``; rows ``>= num_points`` are padding.

  Attributes:
    num_points: real rows N.
    num_shards: devices along the data axis.
    block_rows: rows per device, padding included.
  """
  num_points: int
  num_shards: int
  block_rows: int

  @property
  def padded_rows(self) -> int:
    return self.num_shards * self.block_rows


def layout_for(num_points: int, shards: int, multiple: int = 1) -> RowLayout:
  """The layout that pads ``num_points`` rows to ``shards`` blocks of a multiple of ``multiple``."""
  per = -(-num_points // shards)
  block = -(-per // multiple) * multiple
  return RowLayout(int(num_points), int(shards), int(block))


def place_rows(x: Any, sample_weight: Any, dtype: Any, mesh: Mesh, axis_name: str, *,
               multiple: int = 1) -> tuple[jax.Array, jax.Array, RowLayout]:
  """Puts the rows of x and their weights on ``mesh``; returns (x, weights, layout).

  An x already split over the mesh along ``axis_name`` with a row count divisible by the device
  count stays where it is (all its rows are data). Anything else is padded with weight-0 rows to
  equal blocks of a multiple of ``multiple`` and split by :func:`shard_rows`.
  """
  n = x.shape[0]
  shards = num_shards(mesh, axis_name)
  spec = row_sharding(mesh, axis_name)
  if mesh_of(x) == (mesh, axis_name) and n % shards == 0:
    x = x.astype(dtype)
    if sample_weight is None:
      w = jax.jit(lambda: jnp.ones((n,), dtype), out_shardings=spec)()
    else:
      w = jax.device_put(jnp.asarray(sample_weight, dtype), spec)
    return x, w, RowLayout(n, shards, n // shards)
  if is_global(x):
    raise ValueError(
        f"x is spread over several processes but not row-sharded over the mesh axis "
        f"{axis_name!r} with a row count divisible by {shards}; build it with "
        "lvmjax.sharding.rows_from_processes.")
  x = x if isinstance(x, jax.Array) else np.asarray(x)
  x, w = shard_rows(x.astype(dtype), mesh,
                    None if sample_weight is None else np.asarray(sample_weight, dtype),
                    axis_name=axis_name, multiple=multiple)
  return x, w.astype(dtype), layout_for(n, shards, multiple)


def shard_rows(x: ArrayLike, mesh: Mesh, sample_weight: ArrayLike | None = None, *,
               axis_name: str = DATA_AXIS, multiple: int = 1) -> tuple[jax.Array, jax.Array]:
  """Pads the rows of ``x`` to a multiple of the device count and splits them over ``mesh``.

  The rows are padded with zeros to ``shards * block`` rows (``block`` a multiple of
  ``multiple``), and the padding gets ``sample_weight`` 0. Each device receives only its own
  block (the host copy is split before the transfer, so no single device ever holds all of x).
  With several processes, every process must pass the same x (each sends its devices' blocks);
  to load only a process's own rows, use ``rows_from_processes``.

  Args:
    x: (N, ...) host or device array.
    mesh: the device mesh.
    sample_weight: optional (N,) weights (default 1 for every real row).
    axis_name: the mesh axis to split the rows over.
    multiple: rows per device are a multiple of this (e.g. the E-step chunk size).

  Returns:
    ``(x_sharded, weight_sharded)`` with row sharding ``P(axis_name)``.

  Examples:
    >>> x_s, w_s = shard_rows(np.ones((10, 2)), data_mesh())
    >>> float(w_s.sum())
    10.0
  """
  x = np.asarray(x) if not isinstance(x, jax.Array) else x
  n = x.shape[0]
  layout = layout_for(n, num_shards(mesh, axis_name), multiple)
  pad = layout.padded_rows - n
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
  w = np.ones(n, dtype) if sample_weight is None else sample_weight
  xp = _pad_rows(x, pad)
  wp = _pad_rows(w, pad)
  spec = row_sharding(mesh, axis_name)
  if jax.process_count() > 1:  # every process holds all of x: each takes its devices' blocks
    xp, wp = np.asarray(xp), np.asarray(wp)
    return (jax.make_array_from_callback(xp.shape, spec, lambda i: xp[i]),
            jax.make_array_from_callback(wp.shape, spec, lambda i: wp[i]))
  return jax.device_put(xp, spec), jax.device_put(wp, spec)


def _pad_rows(a, pad):
  if not pad:
    return a
  lib = jnp if isinstance(a, jax.Array) else np
  return lib.pad(a, [(0, pad)] + [(0, 0)] * (np.ndim(a) - 1))


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
  pad = per_process - n
  spec = row_sharding(mesh, axis_name)
  xg = jax.make_array_from_process_local_data(spec, _pad_rows(local_x, pad))
  wg = jax.make_array_from_process_local_data(spec, _pad_rows(w, pad))
  return xg, wg


def mesh_of(x: Any, mesh: Mesh | None = None,
            axis_name: str | None = None) -> tuple[Mesh, str] | None:
  """The (mesh, data axis) of a fit: the given ``mesh``, else the row sharding of ``x``.

  Returns None for a single-device fit: no mesh given and ``x`` is not a ``jax.Array`` whose
  rows are split over more than one device by a ``NamedSharding``.

  Raises:
    ValueError: ``axis_name`` is not an axis of the mesh.
  """
  if mesh is not None:
    names = mesh.axis_names
    axis = axis_name if axis_name is not None else (
        DATA_AXIS if DATA_AXIS in names else names[0])
    if axis not in names:
      raise ValueError(f"axis_name={axis!r} is not an axis of the mesh {names}.")
    return mesh, axis
  if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
    return None
  s = getattr(x, "sharding", None)
  if not isinstance(s, NamedSharding) or not s.spec or s.spec[0] is None:
    return None
  axis = s.spec[0]
  if isinstance(axis, tuple):
    if len(axis) != 1:
      return None
    axis = axis[0]
  if axis_name is not None and axis_name != axis:
    raise ValueError(f"x is sharded over mesh axis {axis!r}, not axis_name={axis_name!r}.")
  if int(s.mesh.shape[axis]) == 1:
    return None
  return s.mesh, axis


def is_global(x: Any) -> bool:
  """True for a ``jax.Array`` with shards on other processes (its values cannot be fetched)."""
  return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and (
      not x.is_fully_addressable)


def check_local_values(x: Any, name: str = "x") -> None:
  """Checks that the shards of ``x`` this process holds are finite (multi-host input checks)."""
  for shard in x.addressable_shards:
    arr = np.asarray(shard.data)
    if not np.all(np.isfinite(arr)):
      raise ValueError(f"{name} contains NaN or infinite values (in the rows of process "
                       f"{jax.process_index()}). Remove or impute them before fitting.")


def local_rows(axis_name: str, layout: RowLayout, local_count: int) -> tuple[jax.Array, jax.Array]:
  """Inside ``shard_map``: global row ids (-1 on padding) and a validity mask of the local rows.

  ``local_count`` is the number of local rows after any local padding (>= ``block_rows``).
  """
  j = jax.lax.axis_index(axis_name)
  r = jnp.arange(local_count, dtype=jnp.int32)
  rows = j.astype(jnp.int32) * layout.block_rows + r
  valid = (r < layout.block_rows) & (rows < layout.num_points)
  return jnp.where(valid, rows, -1), valid


def gather_rows(a: jax.Array, axis_name: str, layout: RowLayout) -> jax.Array:
  """Inside ``shard_map``: the (N, ...) global array of the real rows of local blocks ``a``.

  ``a`` holds this device's ``block_rows`` (or more, locally padded) rows; every device gets the
  same result, in global row order. Costs O(N) memory per device: use for (N,) vectors.
  """
  g = jax.lax.all_gather(a[:layout.block_rows], axis_name, tiled=True)
  return g[:layout.num_points]


def take_rows(a: jax.Array, axis_name: str, layout: RowLayout, rows: jax.Array) -> jax.Array:
  """Inside ``shard_map``: ``a_global[rows]`` for global row ids ``rows``, on every device.

  The owner of each row contributes it and the others zeros; one ``psum`` adds them (exact).
  """
  j = jax.lax.axis_index(axis_name)
  owner = rows // layout.block_rows
  local = jnp.clip(rows - owner * layout.block_rows, 0, a.shape[0] - 1)
  mine = (owner == j).reshape(rows.shape + (1,) * (a.ndim - 1))
  vals = jnp.where(mine, a[local], jnp.zeros((), a.dtype))
  return jax.lax.psum(vals, axis_name)
