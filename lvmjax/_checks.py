"""Input validation shared by the model families.

Every public entry point checks its inputs here *before* anything is traced, and raises a
``ValueError`` that says what is wrong and how to fix it. Checks that need concrete values (NaN,
sums, positive definiteness) step aside when the argument is a tracer, so the functions still work
under a user's ``jit`` or ``vmap``; shape checks always apply.
"""
from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
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
  if not is_concrete(x):
    return
  on_device = off_host(x)
  arr = x if on_device else np.asarray(x)  # an accelerator's array is not copied to the host
  if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
    hint = f" Convert it: {name}.astype(np.float32)." if arr.dtype.name == "bfloat16" else ""
    raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.{hint}")
  if on_device:
    bad = int(_count_nonfinite(arr))  # counted where the data live; one number comes back
  else:
    finite = np.isfinite(arr)
    bad = 0 if finite.all() else int(finite.size - np.count_nonzero(finite))
  if bad:
    raise ValueError(
        f"{name} contains {bad} NaN or infinite value(s). Remove or impute them before fitting "
        "(e.g. x = x[np.isfinite(x).all(axis=1)]).")


def off_host(x: Any) -> bool:
  """True for a JAX array held by an accelerator (reading it on the host means a copy): value
  checks of such data count on the device and bring back only the count."""
  return isinstance(x, jax.Array) and any(d.platform != "cpu" for d in x.devices())


@jax.jit
def _count_nonfinite(x: jax.Array) -> jax.Array:
  return jnp.sum(~jnp.isfinite(x), dtype=jnp.int32)


@jax.jit
def count_nan(x: jax.Array) -> jax.Array:
  """The number of NaN entries of ``x``, counted on the device that holds it."""
  return jnp.sum(jnp.isnan(x), dtype=jnp.int32)


def check_key(key: Any, name: str = "key", *, allow_none: bool = False) -> None:
  """Checks that ``key`` is one JAX PRNG key, before anything is traced.

  Accepted: a new-style typed key (``jax.random.key(seed)``: dtype ``key<impl>``, shape ``()``) or
  a legacy raw key (``jax.random.PRNGKey(seed)``: uint32 of shape ``(2,)``, or ``(4,)`` for the
  "rbg" implementations). Tracers are checked by shape and dtype too, so the check also applies
  under ``jit`` and ``vmap``.

  Args:
    key: the object passed where a key belongs.
    name: the argument's name, for the message.
    allow_none: accept None (for functions whose key is optional).

  Raises:
    ValueError: ``key`` is an int, None (unless allowed), a batch of keys, or another array; the
      message names ``jax.random.key(0)``.
  """
  if key is None and allow_none:
    return
  fix = (f"Pass a PRNG key, e.g. {name}=jax.random.key(0) (or jax.random.split(key)[0] to "
         "derive one); keys are explicit in lvmjax and never defaulted.")
  if key is None or isinstance(key, (bool, int, float, np.integer, np.floating)):
    raise ValueError(f"{name} must be a JAX PRNG key, got {type(key).__name__} {key!r}. {fix}")
  dtype, shape = getattr(key, "dtype", None), np.shape(key) if hasattr(key, "shape") else None
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if shape != ():
      raise ValueError(f"{name} must be one PRNG key, got an array of keys of shape {shape}. "
                       f"Pass one of them, e.g. {name}[0].")
    return
  if dtype is not None and np.dtype(dtype) == np.uint32 and shape in ((2,), (4,)):
    return  # a legacy raw key from jax.random.PRNGKey
  what = (f"an array of dtype {np.dtype(dtype)} and shape {shape}" if dtype is not None
          else type(key).__name__)
  raise ValueError(f"{name} must be a JAX PRNG key, got {what}. {fix}")


#: Data dtypes the fits compute in as given; integers and bools are converted (see below).
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def computed_dtype(dtype: Any) -> np.dtype:
  """The dtype lvmjax computes data of ``dtype`` in: a float dtype as JAX's x64 mode allows
  (float64 becomes float32 without it), anything else JAX's default float. No warning: the
  fits' door (:func:`check_float_dtype`) has said what it needed to."""
  dtype = jnp.dtype(dtype)
  return np.dtype(jax.dtypes.canonicalize_dtype(dtype if jnp.issubdtype(dtype, jnp.floating)
                                                else float))


def check_float_dtype(x: Any, name: str = "x") -> np.dtype:
  """Checks the dtype of data given to a fit and returns the dtype the fit computes in.

  * float32 and float64 are kept (float64 needs ``jax_enable_x64``; without it JAX computes in
    float32, and a ``UserWarning`` says so: float64 data is never computed in float32 silently).
  * Integers and bools are converted to JAX's default float dtype (float32, or float64 with
    ``jax_enable_x64``), as ``jnp.asarray(x, float)`` does; e.g. uint8 pixels in 0..255 are used
    as the numbers 0.0..255.0 (scale them yourself if you want [0, 1]).
  * float16 and bfloat16 are refused: the covariances, Cholesky factors and sums of squares of
    the fits lose their digits (or overflow above 65504) in 16 bits, and XLA's linear algebra
    has no half-precision kernels on CPU. Convert with ``x.astype(np.float32)``.

  Args:
    x: the data (an array, or anything with a ``dtype``).
    name: the argument's name, for the message.

  Returns:
    The float dtype the fit computes in.

  Raises:
    ValueError: a 16-bit float, complex or non-numeric dtype.
  """
  dtype = getattr(x, "dtype", None)
  dtype = np.dtype(np.asarray(x).dtype if dtype is None else dtype)
  if dtype in FLOAT_DTYPES:
    computed = computed_dtype(dtype)
    if computed != dtype:
      warnings.warn(
          f"{name} is {dtype.name} but JAX's x64 mode is off, so it is computed in "
          f"{computed.name}. For {dtype.name}, call jax.config.update('jax_enable_x64', True) "
          f"before any JAX computation; to silence this, pass {name}.astype(np.float32).",
          UserWarning, stacklevel=_caller_stacklevel())
    return computed
  if dtype == bool or np.issubdtype(dtype, np.integer):
    return computed_dtype(dtype)
  if dtype.itemsize == 2 and (dtype.kind == "f" or dtype.name == "bfloat16"):
    raise ValueError(
        f"{name} has dtype {dtype.name}; lvmjax fits need float32 or float64 data (16-bit floats "
        f"lose the digits of covariances and sums of squares). Convert it: "
        f"{name}.astype(np.float32).")
  raise ValueError(f"{name} must hold real numbers (float32, float64, integers or bools), got "
                   f"dtype {dtype.name}.")


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_stacklevel() -> int:
  """The ``stacklevel`` of a warning issued here that points at the first frame outside lvmjax
  (the user's call), however deep inside the package the check runs."""
  level, frame = 1, inspect.currentframe().f_back
  while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
    frame, level = frame.f_back, level + 1
  return level


def check_fit_inputs(key: Any, x: Any, *, x_name: str = "x", allow_none_key: bool = False) -> None:
  """The door check of a public fit function: ``key`` is one PRNG key (:func:`check_key`) and
  data with a dtype has one a fit can compute in (:func:`check_float_dtype`).

  Data without a ``dtype`` attribute (a stream source, a list of files) is left to the fit's own
  per-batch checks.

  Raises:
    ValueError: as :func:`check_key` and :func:`check_float_dtype`.
  """
  check_key(key, allow_none=allow_none_key)
  if hasattr(x, "dtype"):
    check_float_dtype(x, x_name)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
  """Checks that ``value`` is an integer >= ``minimum`` and returns it as ``int``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}.")
  return int(value)


def check_num_active(num_active: Any, num_components: int, components_name: str) -> Any:
  """Checks a fit's ``num_active`` (None, or an integer in [1, K]; a traced integer scalar is
  passed through) and returns None or an int32 scalar, an argument that compiles once for all
  values."""
  if num_active is None:
    return None
  if not is_concrete(num_active):
    if np.shape(num_active) != () or not jnp.issubdtype(num_active.dtype, jnp.integer):
      raise ValueError(f"num_active must be an integer scalar, got a traced {num_active.dtype} "
                       f"of shape {np.shape(num_active)}.")
    return num_active.astype(jnp.int32)
  value = np.asarray(num_active)
  if value.shape != () or not np.issubdtype(value.dtype, np.integer) or value.dtype == bool:
    raise ValueError(f"num_active must be an integer between 1 and {components_name}="
                     f"{num_components}, got {num_active!r}.")
  if not 1 <= int(value) <= num_components:
    raise ValueError(f"num_active={int(value)} must be between 1 and {components_name}="
                     f"{num_components}: the fit runs num_active of the {num_components} "
                     f"components. Raise {components_name} to at least {int(value)}.")
  return np.asarray(int(value), np.int32)


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


def params_first(a: Any, b: Any, params_type: type, name: str) -> tuple[Any, Any]:
  """``(params, key)`` from ``name(params, key, ...)`` or the older order ``name(key, params, ...)``.

  The library's key-order rule puts what defines the model first; functions that once took the key
  first keep accepting that order by recognising the params' type.

  Raises:
    ValueError: neither argument is a ``params_type``.
  """
  if isinstance(a, params_type):
    return a, b
  if isinstance(b, params_type):
    return b, a
  raise ValueError(f"{name} takes (params, key, ...) with params a {params_type.__name__}; got "
                   f"{type(a).__name__} and {type(b).__name__}.")
