"""Helpers shared by the scikit-learn estimators: input validation, dtypes, random_state -> key.

Inputs may be NumPy arrays, lists, pandas frames or JAX arrays. NumPy-like inputs go through
scikit-learn's own ``validate_data`` (same errors, ``n_features_in_``, ``feature_names_in_``);
JAX arrays stay on their device and get the equivalent checks here. Computation runs in the input's
float dtype: float32 stays float32; float64 stays float64 when x64 is enabled
(``jax.config.update("jax_enable_x64", True)`` or ``with jax.enable_x64(True):``) and is computed
in float32 otherwise; integer and boolean inputs become JAX's default float.
"""
from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from lvmjax import _checks


def key_from_random_state(random_state: Any) -> jax.Array:
  """A JAX PRNG key from a scikit-learn ``random_state`` (None, int or ``RandomState``).

  An int ``s`` gives ``jax.random.key(s)``, so ``random_state=s`` reproduces the core function
  called with ``jax.random.key(s)``. ``None`` and a ``RandomState`` draw a 31-bit seed from
  NumPy's global generator or from the given one (which it advances), as scikit-learn does.
  """
  if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
    return jax.random.key(int(random_state))
  rng = check_random_state(random_state)
  return jax.random.key(int(rng.randint(np.iinfo(np.int32).max)))


def validate_x(estimator: Any, x: Any, *, reset: bool, ensure_min_samples: int = 1,
               ensure_min_features: int = 1) -> jax.Array:
  """Validates X and returns it as a floating-point JAX array.

  NumPy-like inputs go through ``sklearn.utils.validation.validate_data`` (dtype float64 or
  float32, finite, 2-D, feature-count and feature-name checks, sets ``n_features_in_`` when
  ``reset``). JAX arrays are checked on their device with the same rules.
  """
  if isinstance(x, jax.Array):
    validate_data(estimator, x, reset=reset, skip_check_array=True)  # feature count / names
    if x.ndim != 2:
      raise ValueError(f"Expected a 2D array, got an array of shape {x.shape}. Reshape your "
                       "data, e.g. x.reshape(-1, 1) for a single feature or x.reshape(1, -1) "
                       "for a single sample.")
    name = type(estimator).__name__
    if x.shape[0] < ensure_min_samples:
      raise ValueError(f"Found array with {x.shape[0]} sample(s) (shape={x.shape}) while a "
                       f"minimum of {ensure_min_samples} is required by {name}.")
    if x.shape[1] < ensure_min_features:
      raise ValueError(f"Found array with {x.shape[1]} feature(s) (shape={x.shape}) while a "
                       f"minimum of {ensure_min_features} is required by {name}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(jnp.result_type(float))  # float64 under x64, else float32
    elif jnp.finfo(x.dtype).bits < 32:
      x = x.astype(jnp.float32)
    if not bool(jnp.all(jnp.isfinite(x))):
      raise ValueError("Input X contains NaN or infinity.")
    return x
  x = validate_data(estimator, x, reset=reset, dtype=[np.float64, np.float32],
                    ensure_min_samples=ensure_min_samples,
                    ensure_min_features=ensure_min_features)
  return jnp.asarray(x)


def validate_sample_weight(sample_weight: Any, num_points: int, dtype: Any) -> jax.Array | None:
  """Checks ``sample_weight`` (None, a number, or shape (N,), finite, >= 0, not all zero)."""
  if sample_weight is None:
    return None
  if isinstance(sample_weight, numbers.Number):
    sample_weight = np.full(num_points, sample_weight)
  elif not isinstance(sample_weight, jax.Array):
    sample_weight = np.asarray(sample_weight)
  _checks.check_sample_weight(sample_weight, num_points)
  return jnp.asarray(sample_weight, dtype)


def to_numpy(a: Any) -> np.ndarray:
  """A JAX (or any) array as a NumPy array (copied to the host)."""
  return np.asarray(jax.device_get(a))


def row_blocks(fn, x: jax.Array, block: int):
  """``fn(x)`` in blocks of ``block`` rows (the last one padded), concatenated.

  Bounds the memory of per-row functions whose intermediates are (rows, K, D). All blocks share
  one shape, so ``fn`` compiles once; when N <= block, x is passed as is.
  """
  n = x.shape[0]
  if n <= block:
    return fn(x)
  num = -(-n // block)
  xp = jnp.pad(x, ((0, num * block - n), (0, 0)))
  outs = [fn(xp[i * block:(i + 1) * block]) for i in range(num)]
  return jax.tree.map(lambda *a: jnp.concatenate(a)[:n], *outs)


def check_n_samples(n_samples) -> None:
  """scikit-learn's ValueError for a ``sample(n_samples)`` that is not a positive integer."""
  if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or (
      n_samples < 1):
    raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at "
                     "least one sample.")
