"""Fault tolerance: a run killed with SIGKILL resumes from its last checkpoint and ends with exactly
the parameters of an uninterrupted run; EM and Lloyd blocks resume exactly too."""
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import gmm_synthetic
from configs import kmeans_digits
from configs import vae_digits
from lvmjax import progress
from lvmjax.gmm import train as gmm_train
from lvmjax.kmeans import train as kmeans_train
from lvmjax.vae import train as vae_train
from tests import processes

pytest.importorskip("sklearn")  # the configs use the bundled digits

NUM_STEPS = 150
OVERRIDES = {"num_steps": NUM_STEPS, "checkpoint_every": 10, "log_every": 10, "figures": False,
             "num_importance_samples": 0}


def _complete_steps(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _command(workdir):
  return ([sys.executable, "-m", "experiments.train_vae", "--config", "configs/vae_digits.py:smoke",
           "--workdir", str(workdir), "--quiet"]
          + [f"--config.{k}={v}" for k, v in OVERRIDES.items()])


def _without_rate(records):
  return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]


def test_sigkill_mid_training_then_resume_is_bit_exact(tmp_path):
  workdir = tmp_path / "killed"
  # Slowed down so that the tiny run can be killed midway.
  env = processes.environment(**{vae_train.STEP_DELAY_ENV: "0.03"})
  proc = subprocess.Popen(_command(workdir), cwd=processes.REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 240
  try:
    while not [s for s in _complete_steps(workdir) if s >= 30]:
      assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
      assert time.time() < deadline, "no checkpoint appeared"
      time.sleep(0.02)
    assert proc.poll() is None  # still training: the kill lands mid-run
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.stdout.close()
  assert proc.returncode == -signal.SIGKILL
  killed_at = _complete_steps(workdir)[-1]
  assert 30 <= killed_at < NUM_STEPS
  assert not (workdir / "results.json").exists()

  env.pop(vae_train.STEP_DELAY_ENV)
  out = processes.run(_command(workdir), timeout=300, env=env)
  resumed = re.search(r"Resuming from step (\d+)", out.stderr)
  assert resumed and killed_at <= int(resumed.group(1)) < NUM_STEPS, out.stderr[-3000:]
  assert "Results:" in out.stdout

  config = vae_digits.get_config("smoke")
  config.update(OVERRIDES)
  reference = vae_train.train_and_evaluate(config, tmp_path / "uninterrupted", quiet=True)
  _, _, state, _ = vae_train.restore_run(workdir)
  assert int(state.step) == NUM_STEPS
  leaves, ref_leaves = jax.tree.leaves(state), jax.tree.leaves(reference.state)
  assert len(leaves) == len(ref_leaves)
  for got, want in zip(leaves, ref_leaves):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # bit for bit
  # The metrics file holds each logged step once, with the uninterrupted run's values.
  assert _without_rate(progress.read_metrics(workdir)) == _without_rate(
      progress.read_metrics(tmp_path / "uninterrupted"))


def _gmm_config(max_iter):
  c = gmm_synthetic.get_config("smoke")
  c.k_values, c.select_k, c.num_components = (), "none", 4
  c.tol, c.max_iter, c.checkpoint_every = 0.0, max_iter, 3
  c.figures = False
  return c


def test_em_blocks_resume_exactly(tmp_path):
  full = gmm_train.fit_and_evaluate(_gmm_config(12), tmp_path / "full", quiet=True)
  first = gmm_train.fit_and_evaluate(_gmm_config(6), tmp_path / "split", quiet=True)
  assert first.results["n_iter"] == 6
  second = gmm_train.fit_and_evaluate(_gmm_config(12), tmp_path / "split", quiet=True)
  assert second.results["n_iter"] == full.results["n_iter"] == 12
  for got, want in zip(jax.tree.leaves(second.params), jax.tree.leaves(full.params)):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(second.log_likelihood, full.log_likelihood)
  assert [r["step"] for r in progress.read_metrics(tmp_path / "split")] == list(range(1, 13))


def test_lloyd_blocks_resume_exactly(tmp_path):
  def config(max_iter):
    c = kmeans_digits.get_config("smoke")
    c.k_values, c.tol, c.max_iter, c.figures = (), 0.0, max_iter, False
    c.seed, c.num_clusters = 2, 8  # converges after 15 iterations: the second block matters
    return c
  full = kmeans_train.fit_and_evaluate(config(20), tmp_path / "full", quiet=True)
  assert 10 < full.results["n_iter"] < 20
  kmeans_train.fit_and_evaluate(config(10), tmp_path / "split", quiet=True)
  second = kmeans_train.fit_and_evaluate(config(20), tmp_path / "split", quiet=True)
  np.testing.assert_array_equal(second.centroids, full.centroids)
  assert second.results == full.results
