"""JAX's persistent compilation cache, on by default for the launchers and the scikit-learn drop-ins.

A fit is one compiled program per data shape and configuration. Compiling it takes seconds (the
8x8 digits' full-covariance EM: about 12 s of XLA compilation on 2 CPU cores); loading it from
JAX's persistent compilation cache takes a fraction of a second. :func:`enable` points JAX's
cache at a directory of the user's (``$XDG_CACHE_HOME/lvmjax/jax``, by default
``~/.cache/lvmjax/jax``) and caches every program, small ones too, so that a second process with
the same shapes compiles nothing.

Who turns it on: the launchers (``experiments/*``, through ``experiments/common.py``) and the
scikit-learn drop-ins (``lvmjax.sklearn``, at their first ``fit``). Importing ``lvmjax.gmm``,
``lvmjax.kmeans`` or any other math module changes no JAX setting: code that calls the pure
functions decides for itself (``lvmjax.compile_cache.enable()``, or JAX's own
``jax.config.update("jax_compilation_cache_dir", path)``).

A user's setting wins: nothing is changed when ``LVMJAX_NO_COMPILE_CACHE=1`` is set, or when
JAX's cache directory is already chosen (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)``), or when JAX's cache is switched off
(``jax_enable_compilation_cache=False``). The cache only grows; delete the directory to empty it.
JAX trusts what it loads from the cache, so the directory is created readable by its owner only.
"""
from __future__ import annotations

import ctypes
import os

import jax

__all__ = ["DISABLE_ENV", "default_dir", "disabled_by_user", "enable", "release_programs",
           "user_cache_dir"]

#: Environment variable that keeps lvmjax from turning the cache on (``1``, ``true`` or ``yes``).
DISABLE_ENV = "LVMJAX_NO_COMPILE_CACHE"

_ENABLED: dict[str, str | None] = {"path": None}


def default_dir() -> str:
  """``$XDG_CACHE_HOME/lvmjax/jax``, with ``~/.cache`` when ``XDG_CACHE_HOME`` is unset."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "lvmjax", "jax")


def disabled_by_user() -> bool:
  """True when ``LVMJAX_NO_COMPILE_CACHE`` asks lvmjax not to turn the cache on."""
  return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def user_cache_dir() -> str | None:
  """The cache directory the user chose for JAX (config or environment), or None."""
  return jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR") or None


def enable(path: str | os.PathLike | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache in ``path`` unless the user decided otherwise.

  Sets ``jax_compilation_cache_dir`` to ``path`` (default :func:`default_dir`),
  ``jax_persistent_cache_min_compile_time_secs`` to 0 and
  ``jax_persistent_cache_min_entry_size_bytes`` to -1 (where they hold JAX's defaults), so that
  every compiled program is written (JAX's defaults skip programs that compile in under a second,
  which are most of a small fit's).
  Works before or after JAX's first compilation; calling it again does nothing.

  Args:
    path: the cache directory; None for :func:`default_dir`. Ignored (the user's setting wins)
      when the user set ``LVMJAX_NO_COMPILE_CACHE=1``, chose JAX's cache directory
      (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``), or turned JAX's cache off.

  Returns:
    The cache directory in use (the user's own when they chose one), or None when the cache is
    off (disabled by the user, or the directory cannot be created).
  """
  if _ENABLED["path"] is not None:
    return _ENABLED["path"]
  if disabled_by_user() or not jax.config.jax_enable_compilation_cache:
    return None
  chosen = user_cache_dir()
  if chosen is not None:
    return chosen
  path = os.path.abspath(os.path.expanduser(os.fspath(path if path is not None else default_dir())))
  try:
    os.makedirs(path, mode=0o700, exist_ok=True)
  except OSError:
    return None  # a read-only home: run without the cache rather than fail
  # JAX's defaults (1 s, 0 bytes) skip the small programs; a value the user set stays.
  if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  if jax.config.jax_persistent_cache_min_entry_size_bytes == 0:
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  jax.config.update("jax_compilation_cache_dir", path)
  _ENABLED["path"] = path
  return path


def release_programs() -> bool:
  """Frees the compiled programs this process holds and returns the memory to the system.

  ``jax.clear_caches()`` drops every in-memory JAX cache (compiled programs, traced functions);
  the memory XLA used to compile them is then free but kept by the C allocator, so glibc's
  ``malloc_trim(0)`` hands it back. For a launcher that compiles programs it never runs again
  (the GMM model selection's, before the final fit), this keeps the process's memory from
  growing with each compilation (the main job's peak: 679 MB -> under 600 MB, with its other
  savings). A later call of a released function recompiles it,
  or loads it from the persistent cache when that is on.

  Returns:
    True when the memory was handed back (glibc), False where there is no ``malloc_trim``
    (then only the caches were cleared).
  """
  jax.clear_caches()
  return return_free_memory()


def return_free_memory() -> bool:
  """Hands the memory the C allocator holds but nobody uses back to the system (glibc's
  ``malloc_trim(0)``), keeping every compiled program.

  Compiling a program takes far more memory than the program keeps (on the 8x8 digits, a GMM
  fit's program of 110 MB took 290 MB to compile); glibc keeps the difference for later
  allocations, so a process that compiles a few programs in turn holds the sum. Calling this
  after a compilation starts the next one from the lower level.

  Returns:
    True when the memory was handed back (glibc), False where there is no ``malloc_trim``.
  """
  try:
    trim = ctypes.CDLL(None).malloc_trim
  except (AttributeError, OSError):  # not glibc (macOS, musl, Windows)
    return False
  trim(0)
  return True
