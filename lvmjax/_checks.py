"""Input validation shared by the model families.

Every public entry point checks its inputs here *before* anything is traced, and raises a
``ValueError`` that says what is wrong and how to fix it. Checks that need concrete values (NaN,
sums, positive definiteness) step aside when the argument is a tracer, so the functions still work
under a user's ``jit`` or ``vmap``; shape checks always apply.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when ``x`` holds values we can inspect (not a JAX tracer)."""
  return not isinstance(x, jax.core.Tracer)


def check_data(x: Any, name: str = "x", *, ndim: int = 2) -> None:
  """Checks that ``x`` has ``ndim`` dimensions, at least one row, and only finite values."""
  shape = np.shape(x)
  if len(shape) != ndim:
    raise ValueError(
        f"{name} must be a {ndim}-D array of shape (num_points, num_features), got shape {shape}. "
        "Reshape it, e.g. x.reshape(len(x), -1) for images or x[:, None] for 1-D data.")
  if shape[0] < 1 or (ndim > 1 and shape[-1] < 1):
    raise ValueError(f"{name} must have at least one row and one column, got shape {shape}.")
  if is_concrete(x):
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
      raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.")
    if not np.all(np.isfinite(arr)):
      bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
      raise ValueError(
          f"{name} contains {bad} NaN or infinite value(s). Remove or impute them before fitting "
          "(e.g. x = x[np.isfinite(x).all(axis=1)]).")


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
  """Checks that ``value`` is an integer >= ``minimum`` and returns it as ``int``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}.")
  return int(value)


def check_nonnegative(value: Any, name: str) -> float:
  """Checks that a Python scalar is finite and >= 0 and returns it as ``float``."""
  if not is_concrete(value):
    return value
  v = float(value)
  if not np.isfinite(v) or v < 0:
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
  return v


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
  """Checks that ``value`` is one of ``choices``."""
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}.")
  return value


def check_sample_weight(sample_weight: Any, num_points: int) -> None:
  """Checks a per-point weight vector: shape (N,), finite, >= 0, not all zero."""
  if sample_weight is None:
    return
  shape = np.shape(sample_weight)
  if shape != (num_points,):
    raise ValueError(
        f"sample_weight must have shape ({num_points},), one weight per row of x; got {shape}.")
  if is_concrete(sample_weight):
    w = np.asarray(sample_weight, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
      raise ValueError("sample_weight must be finite and >= 0.")
    if not np.any(w > 0):
      raise ValueError("sample_weight is zero everywhere; at least one point needs positive weight.")
