"""Model selection over K (lvmjax.gmm.train.select_num_components) compiles a bounded number of
programs: one EM program per K and one score program per K and split, not every operation of
the scores op by op (which was ~45 compilations per K, most of the main job's time and memory)."""
import contextlib

import jax
import jax.monitoring

from configs import gmm_synthetic
from lvmjax.gmm import train as gmm_train

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # also fired by a cache hit


@contextlib.contextmanager
def _count_programs():
  """Counts the programs JAX compiles (or loads from a persistent cache) inside the block."""
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


def test_model_selection_compiles_per_k_not_per_operation(tmp_path):
  config = gmm_synthetic.get_config("smoke")
  config.k_values = (2, 3, 4)
  train, test = gmm_train.load_data(config)
  x, x_test = jax.device_put(train.x), jax.device_put(test.x)
  key = jax.random.key(0)
  with _count_programs() as first:
    table = gmm_train.select_num_components(config, x, key, tmp_path / "a", x_test)
  assert table["k"] == [2, 3, 4]
  # Per K: the EM fit, the trimming of its history to n_iter (per distinct n_iter), the score on
  # the training and on the test rows; a few one-off programs (key derivation, constants).
  # Op-by-op scoring compiled 113 programs for these three Ks.
  assert 0 < first[0] <= 4 * len(config.k_values) + 6, first[0]
  with _count_programs() as again:  # the same Ks again: every program is reused
    table_again = gmm_train.select_num_components(config, x, key, tmp_path / "b", x_test)
  assert again[0] == 0
  assert table_again == table
