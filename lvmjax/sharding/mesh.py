"""Device meshes: the data axis that splits the rows of a fit, and how to find it on an array."""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def use_cpu_cores(num_devices: int | None = None) -> int:
  """Makes JAX create ``num_devices`` host CPU devices (default: one per core).

  Sets ``jax_num_cpu_devices``, which JAX reads when it creates its CPU backend, so call it right
  after ``import jax``, before any JAX computation. Fits over ``data_mesh()`` then run each
  device's rows on its own thread (see :mod:`lvmjax.sharding`); with one device per core nothing
  else changes, and arrays not put on the mesh stay on device 0. (Batched Cholesky factorisations
  and triangular solves inside such a mesh go through :mod:`lvmjax.linalg`, which keeps jaxlib
  < 0.12 from deadlocking its CPU thread pool.)

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
