"""Helpers shared by the scikit-learn estimators: input validation, dtypes, random_state -> key.

Inputs may be NumPy arrays, lists, pandas frames, SciPy sparse matrices (where the estimator
accepts them) or JAX arrays. NumPy-like inputs go through scikit-learn's own ``validate_data``
(same errors, ``n_features_in_``, ``feature_names_in_``); JAX arrays stay on their device and get
the equivalent checks here.

dtypes follow scikit-learn: float32 input is computed in float32, float64 input in float64, and
integer or boolean input is converted to float64. float64 needs JAX's x64 mode; the estimators
turn it on only around their own computation with JAX's scoped context
(``with jax.enable_x64(True):``, see `precision`), so the user never changes JAX's global state,
and float32 work (theirs, and the estimators' on float32 input) is untouched. JAX's jit caches
key on the x64 state, so the float32 and float64 versions of each function are compiled (and
cached) apart.

The estimators turn on JAX's persistent compilation cache (`lvmjax.compile_cache.enable`: a
directory under ``~/.cache/lvmjax``) when they first validate an X, so that a new process with the
same data shapes loads the compiled fit instead of compiling it again. A user's own cache setting,
or ``LVMJAX_NO_COMPILE_CACHE=1``, wins; importing ``lvmjax.gmm`` and the other math modules leaves
JAX's settings alone.
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from lvmjax import _checks
from lvmjax import compile_cache

#: Rows densified at a time from sparse input in predict-like methods.
SPARSE_BLOCK_ROWS = 4096
#: Sparse input to a fit is densified whole (the fits run on dense device arrays); above this
#: many entries (8 GiB in float64) the fit refuses, naming the fix.
MAX_DENSE_ENTRIES = 2**30


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


def restart_keys(key: jax.Array, n_init: int) -> jax.Array:
  """The keys of ``n_init`` restarts: ``jax.random.split(key, n_init)``.

  These are the keys ``lvmjax.gmm.fit`` and ``lvmjax.kmeans.fit`` give their restarts when
  ``n_init > 1``, and JAX's split is prefix-consistent, so the single run of ``n_init=1`` is the
  first restart of every ``n_init``: more restarts never end worse, as in scikit-learn (whose
  restarts draw one after another from one generator).
  """
  return jax.random.split(key, n_init)


@contextlib.contextmanager
def precision(dtype: Any) -> Iterator[None]:
  """The block computes in ``dtype``: float64 turns on JAX's x64 mode for the block only.

  ``jax.enable_x64(True)`` is scoped to the block (and thread); outside it JAX's global setting
  is whatever the user chose. Arrays made inside keep their dtype after the block. float32 leaves
  the state as it is, so float32 fits compile and run exactly as without this helper.
  """
  if np.dtype(dtype) == np.float64:
    with jax.enable_x64(True):
      yield
  else:
    yield


def compute_dtype(*dtypes: Any) -> np.dtype:
  """The float dtype scikit-learn would compute in: float64 if any is float64, else float32."""
  return np.dtype(np.float64 if any(np.dtype(d) == np.float64 for d in dtypes) else np.float32)


def validate_x(estimator: Any, x: Any, *, reset: bool, ensure_min_samples: int = 1,
               ensure_min_features: int = 1, accept_sparse: bool = False,
               allow_nan: bool = False) -> Any:
  """Validates X and returns it, not yet converted to a device array (see `to_device`).

  NumPy-like inputs go through ``sklearn.utils.validation.validate_data`` (dtype float64 or
  float32, integers to float64, finite, 2-D, feature-count and feature-name checks, sets
  ``n_features_in_`` when ``reset``); with ``accept_sparse``, a SciPy sparse matrix becomes CSR;
  with ``allow_nan``, NaN entries pass (missing values) and only infinities are refused.
  JAX arrays are checked on their device with the same rules. The result's ``dtype`` (float32
  or float64) is the one to compute in. Turns on JAX's persistent compilation cache (see the module
  docstring) before the estimator's first compilation.
  """
  compile_cache.enable()
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
      with precision(np.float64):  # integers and bools become float64, as in scikit-learn
        x = x.astype(jnp.float64)
    elif jnp.finfo(x.dtype).bits < 32:
      x = x.astype(jnp.float32)
    if allow_nan:
      if bool(jnp.any(jnp.isinf(x))):
        raise ValueError("Input X contains infinity.")
    elif not bool(jnp.all(jnp.isfinite(x))):
      raise ValueError("Input X contains NaN or infinity.")
    return x
  return validate_data(estimator, x, reset=reset, dtype=[np.float64, np.float32],
                       accept_sparse="csr" if accept_sparse else False,
                       accept_large_sparse=False, ensure_min_samples=ensure_min_samples,
                       ensure_min_features=ensure_min_features,
                       ensure_all_finite="allow-nan" if allow_nan else True)


def to_device(x: Any, dtype: Any = None) -> jax.Array:
  """A validated X (NumPy, JAX or SciPy CSR) as a dense JAX array of ``dtype``.

  Call it inside ``precision(dtype)`` when ``dtype`` is float64. Sparse input is densified whole,
  up to `MAX_DENSE_ENTRIES` entries.
  """
  dtype = x.dtype if dtype is None else dtype
  if sp.issparse(x):
    n, d = x.shape
    if n * d > MAX_DENSE_ENTRIES:
      raise ValueError(
          f"Sparse X of shape {x.shape} would take {n * d} dense entries; the lvmjax fits run on "
          f"dense device arrays (at most {MAX_DENSE_ENTRIES} entries here). Reduce the number of "
          "features first, e.g. with sklearn.decomposition.TruncatedSVD, or use scikit-learn's "
          "estimator, which works on sparse X directly.")
    x = x.toarray()
  if isinstance(x, jax.Array):
    return x.astype(dtype)
  return jax.device_put(np.asarray(x, dtype))  # unlike jnp.asarray, compiles no copy per shape


def dense_blocks(x: Any, dtype: Any, block: int | None = None) -> Iterator[jax.Array]:
  """Row blocks of a validated X as dense JAX arrays: the whole X when it is dense, blocks of
  ``block`` rows (default `SPARSE_BLOCK_ROWS`) densified one at a time when it is sparse
  (bounding the memory of predict-like methods on sparse data)."""
  if not sp.issparse(x):
    yield to_device(x, dtype)
    return
  block = SPARSE_BLOCK_ROWS if block is None else block
  for start in range(0, x.shape[0], block):
    yield jnp.asarray(x[start:start + block].toarray(), dtype)


def validate_sample_weight(sample_weight: Any, num_points: int, dtype: Any) -> jax.Array | None:
  """Checks ``sample_weight`` (None, a number, or shape (N,), finite, >= 0, not all zero).

  Returns it as a JAX array of ``dtype``; call inside ``precision(dtype)``. The caller's array is
  never modified.
  """
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


# Rows per block in an estimator's predict/score: (rows, K, D) intermediates of about 2**24 floats.
BLOCK_FLOATS = 2**24


def fitted_rows(fn, x: Any, fit_dtype: Any, width: int, get_params) -> np.ndarray:
  """``fn(get_params(dtype), x)`` of a fitted estimator on the rows of validated ``x``.

  Computed in blocks of about ``BLOCK_FLOATS / width`` rows (``width``: K·D of the
  intermediates), in float64 when x or the fit is float64, and returned as NumPy.
  """
  dtype = compute_dtype(x.dtype, fit_dtype)
  block = max(256, BLOCK_FLOATS // width)
  with precision(dtype):
    params = get_params(dtype)
    xj = to_device(x, dtype)
    return to_numpy(row_blocks(lambda xb: fn(params, xb), xj, block))


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
