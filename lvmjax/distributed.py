"""Multi-host start-up: one place that calls ``jax.distributed.initialize`` and says who writes files.

Launchers pass their ``--coordinator_address``, ``--num_processes`` and ``--process_id`` flags here.
Without a coordinator address nothing happens (a single process). On Cloud TPU pods and SLURM, JAX
can find these values itself: pass ``auto=True`` (the launchers' ``--distributed_auto``).
Only process 0 writes metrics, figures and ``config.json``; every process takes part in
checkpointing, which Orbax coordinates.
"""
from __future__ import annotations

import jax
from absl import logging

_initialized = False


def maybe_initialize(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, *, auto: bool = False) -> bool:
  """Calls ``jax.distributed.initialize`` when a coordinator is given (or ``auto``), once.

  Args:
    coordinator_address: ``host:port`` of process 0's coordinator; None or "" for a single process.
    num_processes: total number of processes.
    process_id: this process's index in ``[0, num_processes)``.
    auto: let JAX detect the cluster (Cloud TPU, SLURM, Open MPI) without explicit values.

  Returns:
    True when JAX's distributed runtime is (now) initialized.

  Raises:
    ValueError: inconsistent flags (a process id without a process count, or out of range).
  """
  global _initialized
  if _initialized:
    return True
  if not coordinator_address and not auto:
    if num_processes not in (None, 1) or process_id not in (None, 0):
      raise ValueError("--num_processes/--process_id need --coordinator_address (host:port of "
                       "process 0), or --distributed_auto on a cluster JAX can detect.")
    return False
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"--process_id must be in [0, {num_processes}), got {process_id}.")
  kwargs = {}
  if coordinator_address:
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  jax.distributed.initialize(**kwargs)
  _initialized = True
  logging.info("jax.distributed initialized: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def is_primary() -> bool:
  """True on the process that writes metrics, figures and config files (process 0)."""
  return jax.process_index() == 0
