"""Plumbing shared by the training/fitting loops (``lvmjax/<family>/train.py``).

Config checks that fail at start with a ``ValueError``, the run directory, resuming from the
checkpoint in it, non-finite-loss detection and the results file.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable, Mapping

import numpy as np

from lvmjax import _checks
from lvmjax import checkpoint
from lvmjax import distributed
from lvmjax import progress


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


def config_value(config: Any, name: str) -> Any:
  """``config.<dotted name>``."""
  value = config
  for part in name.split("."):
    value = value[part] if isinstance(value, dict) else getattr(value, part)
  return value


def check_positive_ints(config: Any, names: Iterable[str], minimum: int = 1) -> None:
  """Each ``config.<name>`` must be an integer >= ``minimum``."""
  for name in names:
    _checks.check_positive_int(config_value(config, name), f"config.{name}", minimum=minimum)


def check_positive_floats(config: Any, names: Iterable[str], *, allow_zero: bool = False) -> None:
  """Each ``config.<name>`` must be a finite number > 0 (>= 0 with ``allow_zero``)."""
  for name in names:
    value = config_value(config, name)
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
      bound = ">= 0" if allow_zero else "> 0"
      raise ValueError(f"config.{name} must be a finite number {bound}, got {value!r}.")


def check_bools(config: Any, names: Iterable[str]) -> None:
  """Each ``config.<name>`` must be True or False (not 0/1 or a string such as "false")."""
  for name in names:
    value = config_value(config, name)
    if not isinstance(value, (bool, np.bool_)):
      raise ValueError(f"config.{name} must be True or False, got {value!r}.")


def check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
  """``config.<name>`` must be one of ``choices``."""
  _checks.check_choice(config_value(config, name), f"config.{name}", choices)


def prepare_workdir(workdir: str | os.PathLike) -> pathlib.Path:
  """Checks and creates the run directory."""
  if workdir is None or str(workdir) == "":
    raise ValueError("A workdir is needed (--workdir=/path/to/run): metrics, checkpoints and "
                     "figures are written there.")
  path = pathlib.Path(workdir).expanduser().absolute()
  if path.exists() and not path.is_dir():
    raise ValueError(f"workdir {path} exists and is not a directory.")
  path.mkdir(parents=True, exist_ok=True)
  return path


def check_resumable(ckpt: checkpoint.Checkpointer, config: Any, workdir: pathlib.Path,
                    defaults: Mapping[str, Any] | None = None) -> dict | None:
  """The metadata of the latest checkpoint after checking that ``config`` may resume it.

  Without a checkpoint, a ``config.json`` left in the workdir by an earlier start of a different
  run is also refused. Returns None when there is nothing to resume. ``defaults``: the values of
  keys added to the launcher's config later, for runs saved without them
  (:func:`lvmjax.checkpoint.config_differences`).

  Raises:
    ValueError: the workdir holds a run with a different config.
  """
  meta = ckpt.restore_meta()
  if meta is not None:
    checkpoint.check_config_matches(meta.get("config", {}), config, workdir,
                                    defaults=defaults)
    return meta
  saved = workdir / "config.json"
  if saved.exists():
    try:
      checkpoint.check_config_matches(json.loads(saved.read_text()), config, workdir,
                                      defaults=defaults)
    except json.JSONDecodeError:
      pass
  return None


def write_results(workdir: pathlib.Path, results: dict, name: str = "results.json") -> None:
  """Writes the run's final numbers as JSON (primary process only)."""
  if distributed.is_primary():
    progress.write_json(workdir / name, results)


def non_finite_message(what: str, value: float, step: int, last_checked: int | None,
                       ckpt: checkpoint.Checkpointer, hint: str) -> str:
  """Text of the error raised when a loss or a parameter is not finite."""
  last = ckpt.latest_step()
  where = f"at step {step}" if last_checked is None else (
      f"at step {step} (last seen finite at step {last_checked})")
  kept = (f"The last good checkpoint, step {last}, is kept in {ckpt.directory}."
          if last is not None else "No checkpoint had been written yet.")
  return f"{what} is {value} {where}. {kept} {hint}"


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
  r"""Adjusted Rand index between two labelings (1 = identical partitions, ~0 = chance).

  .. math:: \mathrm{ARI} = \frac{\sum_{ij}\binom{n_{ij}}{2} - E}{\tfrac12\left[\sum_i\binom{a_i}{2}
     + \sum_j\binom{b_j}{2}\right] - E}, \quad E = \frac{\sum_i\binom{a_i}{2}\sum_j\binom{b_j}{2}}
     {\binom{n}{2}}

  with :math:`n_{ij}` the contingency table and :math:`a_i, b_j` its row and column sums
  (Hubert & Arabie, 1985).
  """
  a = np.unique(np.asarray(labels_true), return_inverse=True)[1].ravel()
  b = np.unique(np.asarray(labels_pred), return_inverse=True)[1].ravel()
  if a.shape != b.shape:
    raise ValueError(f"labelings differ in length: {a.shape} vs {b.shape}.")
  n = a.size
  table = np.zeros((a.max() + 1, b.max() + 1), np.int64)
  np.add.at(table, (a, b), 1)
  comb2 = lambda v: (v * (v - 1) / 2.0).sum()  # pylint: disable=unnecessary-lambda-assignment
  index = comb2(table.astype(np.float64))
  sum_a, sum_b = comb2(table.sum(1).astype(np.float64)), comb2(table.sum(0).astype(np.float64))
  total = n * (n - 1) / 2.0
  expected = sum_a * sum_b / total if total else 0.0
  max_index = 0.5 * (sum_a + sum_b)
  if max_index == expected:
    return 1.0
  return float((index - expected) / (max_index - expected))
