"""Model selection over K (lvmjax.gmm.train.select_num_components) compiles a bounded number of
programs: one EM program for every K (the largest K's, with ``num_active``) and one score program
per split, not one per K, nor every operation of the scores op by op (which was ~45 compilations
per K, most of the main job's time and memory)."""

import jax
import numpy as np

from configs import gmm_synthetic
from lvmjax import gmm
from lvmjax.gmm import train as gmm_train
from tests import compile_count
from tests import recording


def test_model_selection_compiles_once_for_every_k(tmp_path):
  config = gmm_synthetic.get_config("smoke")
  config.k_values = (2, 3, 4)
  train, test = gmm_train.load_data(config)
  x, x_test = jax.device_put(train.x), jax.device_put(test.x)
  key = jax.random.key(0)
  with compile_count.count_programs() as first:
    table = gmm_train.select_num_components(config, x, key, tmp_path / "a", x_test)
  assert table["k"] == [2, 3, 4]
  # The initialisation and the EM fit (two programs, compiled one after the other), the parking
  # of the initial parameters' inactive components, the score on the training and on the test
  # rows, and a few one-off programs (key derivation, constants); one EM program per K compiled
  # 4 per K, op-by-op scoring 113 in all.
  assert 0 < first[0] <= 5 + 6, first[0]
  with compile_count.count_programs() as again:  # the same Ks again: every program is reused
    table_again = gmm_train.select_num_components(config, x, key, tmp_path / "b", x_test)
  assert again[0] == 0
  assert table_again == table
  config.k_values = (1, 4)  # other Ks up to the same largest K: still nothing new to compile
  with compile_count.count_programs() as other:
    table_other = gmm_train.select_num_components(config, x, key, tmp_path / "c", x_test)
  assert other[0] == 0, other[0]
  assert table_other["bic"][1] == table["bic"][2]


def test_model_selection_scores_are_those_of_the_k_component_mixture(tmp_path):
  """Each row's BIC, AIC and log-likelihoods are gmm.bic / gmm.aic / log_marginal of the first K
  components of its fit (the padded mixture's inactive components add nothing)."""
  config = gmm_synthetic.get_config("smoke")
  config.k_values = (1, 3)
  train, test = gmm_train.load_data(config)
  x, x_test = jax.device_put(train.x), jax.device_put(test.x)
  key = jax.random.key(0)
  table = gmm_train.select_num_components(config, x, key, tmp_path, x_test)
  for i, k in enumerate(config.k_values):
    res = gmm.fit(jax.random.fold_in(key, k), x, 3, config.covariance_type, init=config.init,
                  max_iter=config.max_iter, tol=config.tol, reg_covar=config.reg_covar,
                  num_active=k)
    p = res.params
    cov = p.covariances if p.covariance_type == "tied" else p.covariances[:k]
    first = gmm.GMMParams(p.weights[:k], p.means[:k], cov, p.covariance_type)
    np.testing.assert_allclose(table["bic"][i], float(gmm.bic(first, x)), rtol=1e-6)
    np.testing.assert_allclose(table["aic"][i], float(gmm.aic(first, x)), rtol=1e-6)
    np.testing.assert_allclose(table["test_log_likelihood"][i],
                               float(np.mean(gmm.log_marginal(first, x_test))), rtol=1e-6)


def test_final_fit_is_the_selections_fit_of_its_k(tmp_path, monkeypatch):
  """When the model selection has fitted the final K, that fit is the result: every EM fit of
  the run is in the selection's program (the largest K), the final mixture scores the
  selection's row for K, and a run restarted after the selection (its table on disk, no
  checkpoint) refits the same mixture."""
  config = gmm_synthetic.get_config("smoke")
  config.k_values = (1, 3, 4)
  config.select_k = "none"
  config.num_components = 3
  config.figures = False
  calls = recording.record_sizes(monkeypatch, gmm)
  run = gmm_train.fit_and_evaluate(config, tmp_path / "a", quiet=True)
  assert calls and set(calls) == {4}, calls  # no fit of K=3 after the selection
  row = run.selection["k"].index(3)
  np.testing.assert_allclose(run.results["train_log_likelihood"],
                             run.selection["train_log_likelihood"][row], rtol=1e-6)
  np.testing.assert_allclose(run.results["test_log_likelihood"],
                             run.selection["test_log_likelihood"][row], rtol=1e-6)
  assert run.results["n_iter"] == run.selection["n_iter"][row]
  assert run.params.weights.shape == (3,)
  lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == run.results["n_iter"]
  # Restart after the selection: its table is kept, the checkpoint is gone.
  restarted = tmp_path / "c"
  restarted.mkdir()
  (restarted / "model_selection.json").write_text(
      (tmp_path / "a" / "model_selection.json").read_text())
  calls.clear()
  run2 = gmm_train.fit_and_evaluate(config, restarted, quiet=True)
  assert set(calls) == {4}, calls  # only the refit of K=3 in the selection's program
  for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(run2.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(run.log_likelihood, run2.log_likelihood)
