"""Flags and start-up shared by the launchers in ``experiments/``.

Every launcher takes ``--config`` (an ``ml_collections`` config file, with ``--config.key=value``
overrides), ``--workdir``, ``--quiet`` and the multi-host flags ``--coordinator_address``,
``--num_processes``, ``--process_id`` (passed to ``jax.distributed.initialize``; omit them on one
machine) or ``--distributed_auto`` (let JAX detect a Cloud TPU / SLURM cluster), and
``--cpu_devices`` (0: one JAX device per CPU core, so that a fit uses every core).
"""
from __future__ import annotations

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


def ensure_importable() -> None:
  """Puts the repository root on ``sys.path`` (for ``python experiments/x.py`` from a checkout)."""
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def define_flags(default_config: str):
  """Defines the common flags; ``default_config`` is a file name in ``configs/``.

  Returns:
    The config flag holder.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  holder = config_flags.DEFINE_config_file(
      "config", os.path.join(CONFIG_DIR, default_config),
      "Config file (configs/*.py), optionally with a variant: configs/x.py:smoke. Override "
      "fields with --config.<field>=<value>.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures. A "
                      "workdir with a checkpoint of the same config resumes from it.")
  flags.DEFINE_bool("quiet", False, "No progress display.")
  flags.DEFINE_string("coordinator_address", None,
                      "Multi-host: host:port of process 0 (jax.distributed.initialize).")
  flags.DEFINE_integer("num_processes", None, "Multi-host: total number of processes.")
  flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")
  flags.DEFINE_bool("distributed_auto", False,
                    "Multi-host: let jax.distributed.initialize() detect the cluster.")
  flags.DEFINE_integer("cpu_devices", 1,
                       "Host CPU devices for JAX (lvmjax.sharding.use_cpu_cores); 0: one per core. "
                       "With more than one device the fit runs data-parallel over them, which "
                       "uses every core of a CPU for EM and K-means (1: one device).")
  return holder


def start() -> None:
  """Initializes multi-host JAX from the flags (nothing on a single process) and logging."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from lvmjax import distributed  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if not f.workdir:
    raise flags.IllegalFlagValueError("--workdir is required, e.g. --workdir /tmp/lvmjax_run")
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())
  cpu_devices = f["cpu_devices"].value if "cpu_devices" in f else 1
  if cpu_devices < 0:
    raise flags.IllegalFlagValueError(f"--cpu_devices must be >= 0, got {cpu_devices}.")
  if cpu_devices != 1:
    from lvmjax import sharding  # pylint: disable=g-import-not-at-top
    sharding.use_cpu_cores(cpu_devices or None)
  distributed.maybe_initialize(f.coordinator_address, f.num_processes, f.process_id,
                               auto=f.distributed_auto)


class _LibraryInfoFilter:
  """Hides the INFO chatter of Orbax and JAX internals (warnings and errors still show; run with
  ``-v 1`` to see everything)."""

  _NOISY = (os.sep + "orbax" + os.sep, os.sep + "jax" + os.sep, os.sep + "etils" + os.sep)

  def filter(self, record) -> bool:
    from absl import logging  # pylint: disable=g-import-not-at-top
    if record.levelno > 20 or logging.get_verbosity() >= 1:
      return True
    return not any(part in record.pathname for part in self._NOISY)


def print_results(results: dict, workdir: str) -> None:
  """Prints the final numbers and where the files are (process 0 only)."""
  from lvmjax import distributed  # pylint: disable=g-import-not-at-top
  if not distributed.is_primary():
    return
  print("Results:")
  for k, v in results.items():
    print(f"  {k}: {v:.6g}" if isinstance(v, float) else f"  {k}: {v}")
  print(f"Files in {os.path.abspath(workdir)}: "
        + ", ".join(sorted(os.listdir(workdir))), flush=True)
