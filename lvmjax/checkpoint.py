"""Checkpoints of a run's state in ``<workdir>/checkpoints``, with Orbax.

A checkpoint holds two items:

* ``state``: a pytree of arrays (parameters, optimizer state, step, RNG key data, ...), saved with
  ``ocp.args.StandardSave`` and restored onto the structure, shapes and dtypes of a template;
* ``meta``: a JSON object (the config, the data position, counters), ``ocp.args.JsonSave``.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save leaves either the whole step or nothing that :meth:`Checkpointer.latest_step` sees; on the
next start, unfinished temporary directories are removed. A reader of another process's run
(evaluation while training goes on) opens it with ``read_only=True``, which removes nothing: the
temporary directory it would take for a dead save may be the live run's save in progress.

Examples:
  >>> import tempfile, jax.numpy as jnp
  >>> with Checkpointer(tempfile.mkdtemp(), max_to_keep=2) as ckpt:
  ...   _ = ckpt.save(10, {"w": jnp.ones(3)}, {"position": [0, 10]})
  ...   ckpt.wait_until_finished()
  ...   state, meta = ckpt.restore({"w": jnp.zeros(3)})
  >>> meta["position"]
  [0, 10]
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pathlib
from typing import Any, Iterable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

#: Config keys that may change between a run and its resumption: how long to run, how often to log
#: or save, where data lives, how thoroughly to evaluate. Every other key must match the checkpoint.
RESUMABLE_KEYS = frozenset({
    "num_steps", "num_epochs", "max_iter", "log_every", "checkpoint_every", "max_to_keep",
    "data_dir", "eval_every", "eval_batch_size", "num_eval_points", "num_importance_samples",
    "figures", "quiet",
})


def config_to_dict(config: Any) -> dict:
  """A JSON-safe plain dict of a ``ConfigDict`` (or mapping): tuples become lists."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  return json.loads(json.dumps(config, default=_json_default))


def _json_default(obj):
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.floating,)):
    return float(obj)
  if isinstance(obj, (np.ndarray, jax.Array)):
    return np.asarray(obj).tolist()
  if isinstance(obj, (set, frozenset, tuple)):
    return list(obj)
  if isinstance(obj, pathlib.PurePath):
    return str(obj)
  if hasattr(obj, "to_dict"):
    return obj.to_dict()
  raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(saved: Any, current: Any, resumable: Iterable[str] = RESUMABLE_KEYS,
                       defaults: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
  """Keys whose values differ between two configs, except those allowed to change on resume.

  Args:
    saved: the config stored with a checkpoint (dict or ConfigDict).
    current: the config of the run being started.
    resumable: leaf names allowed to differ (matched on the last dotted component).
    defaults: ``{dotted_key: value}`` for keys added to a launcher's config after runs were saved
      without them: an absent key counts as this value, the one the launcher reads for it (so a
      run from before the key resumes under a config that has the old behaviour's value).

  Returns:
    ``{dotted_key: (saved_value, current_value)}``; empty when the configs agree.
  """
  a, b = _flatten(config_to_dict(saved)), _flatten(config_to_dict(current))
  resumable, defaults = set(resumable), dict(defaults or {})

  def value(c, k):
    return c.get(k, defaults.get(k, "<absent>"))
  return {k: (value(a, k), value(b, k)) for k in sorted(set(a) | set(b))
          if k.rsplit(".", 1)[-1] not in resumable and value(a, k) != value(b, k)}


def check_config_matches(saved: Any, current: Any, workdir: str | os.PathLike,
                         resumable: Iterable[str] = RESUMABLE_KEYS,
                         defaults: Mapping[str, Any] | None = None) -> None:
  """Raises ValueError when ``current`` cannot resume the checkpoint that was saved with ``saved``
  (:func:`config_differences`)."""
  diff = config_differences(saved, current, resumable, defaults)
  if diff:
    lines = "; ".join(f"{k}: checkpoint has {v[0]!r}, this run has {v[1]!r}" for k, v in diff.items())
    raise ValueError(
        f"The config does not match the checkpoint in {workdir} ({lines}). Resuming would mix two "
        "different runs. Use a new --workdir, or rerun with the checkpoint's values (they are in "
        f"{os.path.join(workdir, 'config.json')}).")


@contextlib.contextmanager
def _without_read_only_warning():
  """Drops Orbax's "Given directory is read only" warning, which a read-only manager logs on
  opening: that is what the caller asked for, not something to warn a user about."""
  logger = logging.getLogger("absl")

  def notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Given directory is read only")

  logger.addFilter(notice)
  try:
    yield
  finally:
    logger.removeFilter(notice)


class Checkpointer:
  """Saves and restores (state pytree, JSON metadata) pairs in ``<workdir>/checkpoints``.

  Args:
    workdir: the run's directory; checkpoints go to ``<workdir>/checkpoints/<step>``.
    max_to_keep: how many most recent checkpoints to keep (None keeps all).
    async_save: write in a background thread (Orbax copies the arrays to host before ``save``
      returns, so the caller may donate them to the next step at once); call
      :meth:`wait_until_finished` (or :meth:`close`, or leave the ``with`` block) before exiting.
    read_only: only read: create, save and delete nothing, and leave unfinished temporary
      directories alone (a run still training may be writing them). For evaluating or
      inspecting a run's checkpoints from another process.
  """

  def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int | None = 3,
               async_save: bool = True, read_only: bool = False):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.read_only = bool(read_only)
    if self.read_only:  # Orbax would only warn and reset each writer's option
      options = ocp.CheckpointManagerOptions(read_only=True, max_to_keep=None, create=False,
                                             cleanup_tmp_directories=False,
                                             save_interval_steps=0)
    else:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
          enable_async_checkpointing=async_save)
    with _without_read_only_warning():
      self._manager = ocp.CheckpointManager(self.directory, options=options,
                                            item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all complete checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> bool:
    """Saves ``state`` and ``meta`` as checkpoint ``step`` (overwriting nothing: a step saved twice
    is skipped). Returns True when a save started.

    Raises:
      ValueError: the checkpointer is read-only.
    """
    if self.read_only:
      raise ValueError(f"This Checkpointer of {self.directory} is read-only (read_only=True); "
                       "open it without read_only to save.")
    if step in self._manager.all_steps():
      return False
    return self._manager.save(
        int(step), force=True,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(config_to_dict(dict(meta)))))

  def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores checkpoint ``step`` (default: the latest) onto the structure of ``template``.

    Args:
      template: a pytree with the same structure, shapes and dtypes as the saved state (e.g. a
        freshly initialized state); its values are not used.
      step: which checkpoint; None for the latest.

    Returns:
      (state, meta).

    Raises:
      ValueError: there is no checkpoint, or its arrays do not fit ``template``.
    """
    step = self.latest_step() if step is None else self._existing(step)
    if step is None:
      raise ValueError(f"No checkpoint in {self.directory}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                        meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(
          f"Checkpoint {step} in {self.directory} does not fit this run's state (different model "
          f"sizes?): {e}. Use a new --workdir.") from e
    return restored.state, dict(restored.meta)

  def restore_meta(self, step: int | None = None) -> dict | None:
    """The JSON metadata of checkpoint ``step`` (default: the latest), or None without checkpoints."""
    step = self.latest_step() if step is None else self._existing(step)
    if step is None:
      return None
    return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

  def _existing(self, step: int) -> int:
    """``step`` if it is a complete checkpoint; otherwise a ValueError naming those there are."""
    steps = self.all_steps()
    if int(step) not in steps:
      raise ValueError(f"No checkpoint of step {step} in {self.directory}; it holds steps "
                       f"{steps or 'none'}. Pass one of them, or none for the latest.")
    return int(step)

  def wait_until_finished(self) -> None:
    """Blocks until background saves have been written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def is_finite_number(value: Any) -> bool:
  """True for a finite real scalar."""
  try:
    return math.isfinite(float(value))
  except (TypeError, ValueError):
    return False
