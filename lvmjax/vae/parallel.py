"""Data-parallel VAE training over a device mesh: batch split over devices, params replicated.

The training step of :func:`lvmjax.vae.training.make_train_step` is jitted with the batch
sharded along the mesh's data axis and the train state replicated. XLA (GSPMD) then runs each
device's share of the batch, and because the loss is the mean over the whole batch, the
gradient is the average of the devices' gradients (an all-reduce that XLA inserts): the same
step as on one device, up to the order of float additions. The step's random draws are those
of the one-device step too (JAX's partitionable threefry generates each element of a sharded
random array from its global index), so the loss trajectory equals the single-device one.

Single process, several devices::

  mesh = sharding.data_mesh()
  step = parallel.make_parallel_train_step(model, optimizer, mesh)
  state = parallel.replicate(state, mesh)
  for batch in batches:
    state, metrics = step(state, parallel.shard_batch(batch, mesh), key)

Several processes (after ``jax.distributed.initialize``): every process runs the same loop;
``shard_batch`` then takes this process's rows of the global batch (``local=True`` if each
process already holds only its own rows).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import optax
from jax.sharding import Mesh
from jax.typing import ArrayLike

from lvmjax import sharding
from lvmjax.vae import model as vae_model
from lvmjax.vae import training


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Copies a pytree (a ``TrainState``, params, PRNG keys) to every device of ``mesh``.

  Works with several processes too (each passes the same values): the leaves go through host
  memory, and typed PRNG keys through their raw key data.
  """
  rep = sharding.replicated(mesh)

  def put(a):
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      data = put(jax.random.key_data(a))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    return jax.device_put(np.asarray(jax.device_get(a)), rep)

  return jax.tree.map(put, tree)


def check_batch_size(batch_size: int, mesh: Mesh, axis_name: str = sharding.DATA_AXIS) -> None:
  """Raises ValueError unless the global batch splits evenly over the data axis."""
  shards = sharding.num_shards(mesh, axis_name)
  if batch_size % shards:
    raise ValueError(f"The batch size {batch_size} must be a multiple of the {shards} devices "
                     f"of the mesh axis {axis_name!r}; use e.g. {shards * max(1, batch_size // shards)}.")


def shard_batch(x: ArrayLike, mesh: Mesh, axis_name: str = sharding.DATA_AXIS, *,
                local: bool = False) -> jax.Array:
  """Puts a batch on the mesh, split along its first axis.

  Args:
    x: the global batch (B, ...) (the same on every process), or, with ``local=True``, only
      this process's rows (B / num_processes, ...).
    mesh: the mesh.
    axis_name: its data axis.
    local: ``x`` holds only this process's rows.

  Returns:
    A (B, ...) ``jax.Array`` with sharding ``P(axis_name)``.

  Raises:
    ValueError: B is not a multiple of the number of devices on the data axis.
  """
  spec = sharding.row_sharding(mesh, axis_name)
  if jax.process_count() == 1:
    check_batch_size(np.shape(x)[0], mesh, axis_name)
    return jax.device_put(x, spec)
  x = np.asarray(x)
  if not local:
    check_batch_size(x.shape[0], mesh, axis_name)
    x = x[sharding.process_rows(x.shape[0])]
  return jax.make_array_from_process_local_data(spec, x)


def make_parallel_train_step(model: vae_model.VAE, optimizer: optax.GradientTransformation,
                             mesh: Mesh, axis_name: str = sharding.DATA_AXIS, *,
                             donate: bool = True, **kwargs
                             ) -> Callable[[training.TrainState, jax.Array, jax.Array],
                                           tuple[training.TrainState, dict]]:
  """The jitted data-parallel ``train_step(state, x, key) -> (state, metrics)``.

  Args:
    model: the VAE.
    optimizer: the optax optimizer.
    mesh: the device mesh.
    axis_name: the data axis the batch is split over (other mesh axes replicate).
    donate: donate the incoming state's buffers (as ``jit_train_step`` does).
    **kwargs: ``objective``, ``num_samples``, ``beta``, ``compute_dtype``, ``analytic_kl`` of
      :func:`lvmjax.vae.training.make_train_step`.

  Returns:
    The step. ``x`` must be a multiple of the data-axis size in length; place it with
    :func:`shard_batch` (a host array is split on the way in, too). The returned state and
    metrics are replicated.
  """
  if axis_name not in mesh.axis_names:
    raise ValueError(f"axis_name={axis_name!r} is not an axis of the mesh {mesh.axis_names}.")
  step = training.make_train_step(model, optimizer, **kwargs)
  rep = sharding.replicated(mesh)
  data = sharding.row_sharding(mesh, axis_name)
  return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())
