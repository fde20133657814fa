r"""Collectives inside ``shard_map``, and the reduction hook that makes one code path serve both.

A fit's statistics add over rows. Code written for one block of rows takes ``shard``, a
:class:`~lvmjax.sharding.Shard` or None, and combines its local values with the functions here:
on one device (``shard=None``) they return the local value unchanged; inside ``shard_map`` over
the rows they are the collective over ``shard.axis_name``. So

.. math::

  \mathrm{psum}(v, \mathrm{None}) = v, \qquad
  \mathrm{psum}(v, \mathrm{shard}) = \sum_{\text{devices } j} v_j,

and the one-device fit and the fit on a mesh are one function (K-means' Lloyd iterations and
seeding, the GMM's EM statistics).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lvmjax.sharding.layout import RowLayout
from lvmjax.sharding.layout import Shard


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


# ----------------------------------------------------------------------------------------------
# The reduction hook: shard=None on one device, a Shard inside shard_map.


def psum(tree: Any, shard: Shard | None) -> Any:
  """Sum of a pytree over the devices of ``shard`` (``lax.psum``); unchanged for None.

  Examples:
    >>> psum(jnp.ones(2), None)
    Array([1., 1.], dtype=float32)
  """
  return tree if shard is None else jax.lax.psum(tree, shard.axis_name)


def pmax(x: Any, shard: Shard | None) -> Any:
  """Maximum over the devices of ``shard`` (``lax.pmax``); unchanged for None."""
  return x if shard is None else jax.lax.pmax(x, shard.axis_name)


def pmin(x: Any, shard: Shard | None) -> Any:
  """Minimum over the devices of ``shard`` (``lax.pmin``); unchanged for None."""
  return x if shard is None else jax.lax.pmin(x, shard.axis_name)


def device_index(shard: Shard | None) -> jax.Array:
  """This device's position along the data axis (``lax.axis_index``); 0 for None."""
  return jnp.int32(0) if shard is None else jax.lax.axis_index(shard.axis_name)


def gather(a: jax.Array, shard: Shard | None) -> jax.Array:
  """The (N, ...) rows of all devices, in global order (:func:`gather_rows`); ``a`` for None."""
  return a if shard is None else gather_rows(a, shard.axis_name, shard.layout)


def take(a: jax.Array, rows: jax.Array, shard: Shard | None) -> jax.Array:
  """Global rows ``rows`` of ``a`` on every device (:func:`take_rows`); ``a[rows]`` for None."""
  return a[rows] if shard is None else take_rows(a, shard.axis_name, shard.layout, rows)


def mean_and_variance(x: jax.Array, valid: jax.Array | None,
                      shard: Shard | None) -> tuple[jax.Array, jax.Array]:
  r"""Unweighted mean and variance per feature of the real rows of all devices (two passes).

  .. math::

    m = \frac{1}{N} \sum_{i \text{ real}} x_i, \qquad
    v = \frac{1}{N} \sum_{i \text{ real}} (x_i - m)^2

  Args:
    x: (n, D) local rows.
    valid: (n,) bool mask of the real rows, or None when all are real (one device only).
    shard: the reduction hook; N is ``shard.layout.num_points`` on a mesh.

  Returns:
    ``(mean, variance)``, each (D,).
  """
  if shard is None and valid is None:
    return jnp.mean(x, axis=0), jnp.var(x, axis=0)
  if valid is None:
    raise ValueError("mean_and_variance on a mesh needs the mask `valid` of the real rows.")
  n = jnp.sum(valid) if shard is None else shard.layout.num_points
  m = psum(jnp.sum(jnp.where(valid[:, None], x, 0), axis=0), shard) / n
  v = psum(jnp.sum(jnp.where(valid[:, None], (x - m) ** 2, 0), axis=0), shard) / n
  return m, v
