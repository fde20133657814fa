"""Shared pytest fixtures.

* ``x64``: runs a test with float64 enabled (float32 stays the library default).
* ``strict_promotion``: JAX raises on implicit rank promotion, which catches silent broadcasting in
  lvmjax's own math (distrax itself relies on rank promotion, so this is opt-in per test).

After each test module, JAX's in-memory caches of compiled programs are emptied: one process runs
the whole suite, and every compiled program stays resident. Without this, the modules from
test_kmeans to test_scale alone grew the process from 0.75 to 4.1 GB in 9 minutes (with it: 1.4 to
1.7 GB), and a whole-suite run on Python 3.11 / jax 0.10.2 aborted inside XLA's compiler in
test_scale. Programs shared between modules compile again (or load from the persistent cache where
it is on).
"""
import gc

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.fixture
def strict_promotion():
  with jax.numpy_rank_promotion("raise"):
    yield
