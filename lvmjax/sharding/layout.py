"""Row layouts: how the N rows of a fit lie on the devices of a mesh, and putting them there."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.typing import ArrayLike

from lvmjax.sharding.mesh import DATA_AXIS
from lvmjax.sharding.mesh import is_global
from lvmjax.sharding.mesh import mesh_of
from lvmjax.sharding.mesh import num_shards
from lvmjax.sharding.mesh import row_sharding


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


class Shard(NamedTuple):
  """Static description of the row sharding inside ``shard_map``: the reduction hook's argument.

  The statistics of a fit add over rows. Code written once for a block of rows takes a
  ``shard: Shard | None``: None on one device (every total is the local value), a ``Shard``
  inside ``shard_map`` (totals are ``psum`` over ``axis_name``); see
  :mod:`lvmjax.sharding.collectives`.

  Attributes:
    axis_name: the mesh axis the rows are split over.
    layout: a :class:`RowLayout` (real rows, devices, rows per device).
  """
  axis_name: str
  layout: RowLayout


def layout_for(num_points: int, shards: int, multiple: int = 1) -> RowLayout:
  """The layout that pads ``num_points`` rows to ``shards`` blocks of a multiple of ``multiple``."""
  per = -(-num_points // shards)
  block = -(-per // multiple) * multiple
  return RowLayout(int(num_points), int(shards), int(block))


def pad_rows(a: Any, num_rows: int) -> Any:
  """``a`` with zero rows appended up to ``num_rows`` rows (NumPy stays NumPy, JAX stays JAX).

  Examples:
    >>> pad_rows(np.ones((2, 3)), 4).shape
    (4, 3)
  """
  pad = num_rows - np.shape(a)[0]
  if pad <= 0:
    return a
  lib = jnp if isinstance(a, jax.Array) else np
  return lib.pad(a, [(0, pad)] + [(0, 0)] * (np.ndim(a) - 1))


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
  x = x.astype(dtype) if isinstance(x, jax.Array) else np.asarray(x, dtype)  # no copy if same
  x, w = shard_rows(x, mesh,
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
    >>> from lvmjax.sharding import data_mesh
    >>> x_s, w_s = shard_rows(np.ones((10, 2)), data_mesh())
    >>> float(w_s.sum())
    10.0
  """
  x = np.asarray(x) if not isinstance(x, jax.Array) else x
  n = x.shape[0]
  layout = layout_for(n, num_shards(mesh, axis_name), multiple)
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
  w = np.ones(n, dtype) if sample_weight is None else sample_weight
  xp = pad_rows(x, layout.padded_rows)
  wp = pad_rows(w, layout.padded_rows)
  spec = row_sharding(mesh, axis_name)
  if jax.process_count() > 1:  # every process holds all of x: each takes its devices' blocks
    xp, wp = np.asarray(xp), np.asarray(wp)
    return (jax.make_array_from_callback(xp.shape, spec, lambda i: xp[i]),
            jax.make_array_from_callback(wp.shape, spec, lambda i: wp[i]))
  return jax.device_put(xp, spec), jax.device_put(wp, spec)
