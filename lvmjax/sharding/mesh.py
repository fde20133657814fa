"""Device meshes: the data axis that splits the rows of a fit, and how to find it on an array."""
from __future__ import annotations

import os
from typing import Any, NamedTuple

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
  global _count_set_on_import
  n = (os.cpu_count() or 1) if num_devices is None else int(num_devices)
  if n < 1:
    raise ValueError(f"num_devices must be >= 1, got {num_devices}.")
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError as e:
    raise ValueError("use_cpu_cores() must run before the first JAX computation (JAX has created "
                     "its CPU backend already); call it right after `import jax`.") from e
  _count_set_on_import = None
  return n


#: Environment variable read by ``import lvmjax``: how many host CPU devices to give JAX
#: (unset: one per core; ``1``: JAX's own single CPU device).
CPU_DEVICES_ENV = "LVMJAX_CPU_DEVICES"

#: A fit whose caller names no mesh uses several CPU devices only from this many rows per device
#: and :data:`AUTO_MESH_MIN_WORK` rows x components x features on: below, a mesh's fixed costs
#: (padding and splitting the rows, one ``psum`` per iteration) outweigh the second core (whole
#: GMM and K-means fits on the 2-core development machine: the mesh was 0.4-0.9x one device at
#: N x K x D <= 2 million, 1.4-1.8x GMM and 1.4x K-means at 8-33 million).
AUTO_MESH_MIN_ROWS = 4096
AUTO_MESH_MIN_WORK = 1 << 23

# The CPU device count `import lvmjax` set (None: it set none, or the user set one since). This
# records where a setting of JAX's own global configuration came from; nothing else is kept.
_count_set_on_import: int | None = None


def _usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0)) or 1
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def cpu_device_count_fixed() -> bool:
  """True when the user fixed JAX's CPU device count (then lvmjax never changes it).

  That is: ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, or ``JAX_NUM_CPU_DEVICES``
  in the environment. (A ``jax.config.update("jax_num_cpu_devices", ...)`` before ``import
  lvmjax`` is respected too, by :func:`use_cores_by_default`.)
  """
  return ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
          or "JAX_NUM_CPU_DEVICES" in os.environ)


def use_cores_by_default() -> int | None:
  """What ``import lvmjax`` does: one JAX host CPU device per core, unless something fixed it.

  JAX's CPU backend has one device by default, and XLA:CPU threads only large matrix products
  over the cores, so a fit on it runs most of each iteration on one core. With one device per
  core, ``gmm.fit`` and ``kmeans.fit`` split large data over them (:func:`auto_placement`) and
  every core works. Arrays and computations not placed on the other devices stay on device 0,
  so other JAX code runs as before. Nothing changes when:

  * JAX has already created its CPU backend (a JAX computation ran before ``import lvmjax``);
  * the user fixed the count (:func:`cpu_device_count_fixed`, or ``jax_num_cpu_devices`` set
    before ``import lvmjax``); a later ``jax.config.update("jax_num_cpu_devices", n)`` or
    :func:`use_cpu_cores` before the first computation still wins;
  * the environment variable ``LVMJAX_CPU_DEVICES`` is ``1`` (other values: that many devices).

  Returns:
    The number of CPU devices set, or None where nothing was changed.

  Raises:
    ValueError: ``LVMJAX_CPU_DEVICES`` is not a positive integer.
  """
  value = os.environ.get(CPU_DEVICES_ENV, "").strip()
  if value:
    n = int(value) if value.isdigit() else 0
    if n < 1:
      raise ValueError(f"{CPU_DEVICES_ENV}={value!r}: expected a positive number of host CPU "
                       "devices for JAX (1: JAX's single CPU device; unset: one per core).")
  else:
    n = _usable_cores()
  if n == 1 or cpu_device_count_fixed() or jax.config.jax_num_cpu_devices >= 0:
    return None
  global _count_set_on_import
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:  # the backend exists already: its device count is fixed
    return None
  _count_set_on_import = n
  return n


def cores_by_default() -> bool:
  """True when JAX's CPU devices are the ones ``import lvmjax`` made (one per core).

  Code that spreads work over every device when there are several (the launchers' data-parallel
  EM, Lloyd and VAE training) does so only over devices the user asked for: with the devices of
  ``import lvmjax`` alone it runs on one device and lets :func:`auto_placement` split large fits.
  """
  return (_count_set_on_import is not None
          and jax.config.jax_num_cpu_devices == _count_set_on_import
          and jax.default_backend() == "cpu")


def spread_devices() -> bool:
  """True where a launcher should run data-parallel over all devices: several devices that the
  user asked for (more than one process, an accelerator, or CPU devices not made by ``import
  lvmjax``: :func:`use_cpu_cores`, ``XLA_FLAGS``, ``JAX_NUM_CPU_DEVICES``)."""
  return jax.device_count() > 1 and (jax.process_count() > 1 or not cores_by_default())


class AutoMesh(NamedTuple):
  """A fit's (mesh, data axis) chosen by :func:`auto_placement`, not by the caller: the fit's
  result is moved to the first local device (:func:`to_first_device`), where a one-device fit's
  result lives, so code after the fit sees no difference."""
  mesh: Mesh
  axis_name: str


def to_first_device(tree: Any) -> Any:
  """``tree``'s arrays on ``jax.local_devices()[0]`` (from a mesh: one copy of replicated
  values; row-sharded values gathered)."""
  return jax.device_put(tree, jax.local_devices()[0])


def auto_placement(x: Any, num_components: int) -> AutoMesh | None:
  """The mesh of a fit whose caller names none and whose ``x`` is not placed: see below.

  Several local CPU devices (one per core after ``import lvmjax``,
  :func:`use_cores_by_default`) split the rows of large data: every device holds at least
  :data:`AUTO_MESH_MIN_ROWS` rows and N x K x D is at least :data:`AUTO_MESH_MIN_WORK`. The
  result equals the one-device fit up to float rounding. Everything else runs on one device: a
  traced x (under ``jit`` or ``vmap``), a ``jax.Array`` committed to a device (e.g. by
  ``jax.device_put(x, jax.devices()[0])``: the way to keep a fit on one device), data of
  several processes, an accelerator as the default backend, or a small problem.

  Returns:
    ``AutoMesh(mesh, DATA_AXIS)`` over the first devices of ``jax.local_devices()``, or None.
  """
  # The checks on x alone first: a small fit (the common case) never asks JAX about devices.
  if isinstance(x, jax.core.Tracer):
    return None
  if isinstance(x, jax.Array) and (getattr(x, "committed", True) or not x.is_fully_addressable):
    return None
  shape = np.shape(x)
  if len(shape) != 2 or shape[0] * shape[1] * max(int(num_components), 1) < AUTO_MESH_MIN_WORK:
    return None
  if shape[0] < 2 * AUTO_MESH_MIN_ROWS or jax.process_count() > 1 or jax.default_backend() != "cpu":
    return None
  devices = jax.local_devices()[:shape[0] // AUTO_MESH_MIN_ROWS]
  if len(devices) < 2:
    return None
  return AutoMesh(data_mesh(devices), DATA_AXIS)


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
