"""Counting the programs JAX compiles, for tests that bound how often a function compiles."""
import contextlib

import jax.monitoring

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # also fired by a cache hit


@contextlib.contextmanager
def count_programs():
  """Counts the programs JAX compiles (or loads from a persistent cache) inside the block: yields
  a one-element list whose entry is the count so far."""
  count = [0]

  def listener(name, secs, **kwargs):
    del secs, kwargs
    if name == _COMPILE_EVENT:
      count[0] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield count
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
