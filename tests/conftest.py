"""Shared pytest fixtures.

* ``x64``: runs a test with float64 enabled (float32 stays the library default).
* ``strict_promotion``: JAX raises on implicit rank promotion, which catches silent broadcasting in
  lvmjax's own math (distrax itself relies on rank promotion, so this is opt-in per test).
"""
import jax
import pytest


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.fixture
def strict_promotion():
  with jax.numpy_rank_promotion("raise"):
    yield
