"""End-to-end runs of each launcher's library function with its smoke config, and bad configs."""
import json
import os
import pathlib
import sys

import jax
import numpy as np
import pytest

from configs import conv_vae_fashion_mnist
from configs import gmm_digits
from configs import gmm_synthetic
from configs import kmeans_digits
from configs import vae_binarized_mnist
from configs import vae_digits
from lvmjax import checkpoint
from lvmjax import data
from lvmjax import experiment
from lvmjax import kmeans
from lvmjax import progress
from lvmjax.gmm import train as gmm_train
from lvmjax.kmeans import train as kmeans_train
from lvmjax.vae import train as vae_train
from tests import processes
from tests import recording

REPO = pathlib.Path(__file__).resolve().parents[1]
pytest.importorskip("sklearn")  # the smoke configs use the bundled digits


def _pngs_ok(workdir, names):
  for name in names:
    path = pathlib.Path(workdir) / name
    assert path.exists(), f"missing {name}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000, name


def _json(path):
  return json.loads(pathlib.Path(path).read_text())


def test_fit_gmm_smoke(tmp_path):
  config = gmm_digits.get_config("smoke")
  config.k_values = ()  # model selection is covered by the synthetic test
  run = gmm_train.fit_and_evaluate(config, tmp_path, quiet=True)
  files = set(os.listdir(tmp_path))
  assert {"config.json", "metrics.jsonl", "results.json", "checkpoints"} <= files
  assert "model_selection.json" not in files and run.selection is None
  _pngs_ok(tmp_path, ["gmm_components.png", "gmm_means.png", "gmm_log_likelihood.png"])
  assert _json(tmp_path / "config.json")["num_components"] == 3
  results = _json(tmp_path / "results.json")
  n_iter = results["n_iter"]
  assert 1 <= n_iter <= 12 and results["num_components"] == 3
  records = progress.read_metrics(tmp_path)
  assert [r["step"] for r in records] == list(range(1, n_iter + 1))
  # EM never decreases the log-likelihood (small float32 slack).
  ll = [r["log_likelihood"] for r in records]
  assert all(b >= a - 1e-3 for a, b in zip(ll[1:], ll[2:]))
  np.testing.assert_allclose(run.log_likelihood, ll, rtol=1e-6)
  # results.json agrees with the returned params.
  from lvmjax import gmm  # pylint: disable=g-import-not-at-top
  train, test = gmm_train.load_data(config)
  np.testing.assert_allclose(results["test_log_likelihood"],
                             float(np.mean(gmm.log_marginal(run.params, test.x))), rtol=1e-5)
  assert results["bic"] > results["aic"]  # log(300) > 2
  assert -1 <= results["test_ari"] <= 1
  steps = checkpoint.Checkpointer(tmp_path).all_steps()
  assert steps[-1] == n_iter


def test_fit_gmm_synthetic_recovers_k(tmp_path):
  config = gmm_synthetic.get_config("smoke")
  run = gmm_train.fit_and_evaluate(config, tmp_path, quiet=True)
  _pngs_ok(tmp_path, ["gmm_components.png", "gmm_log_likelihood.png", "gmm_model_selection.png"])
  assert not (tmp_path / "gmm_means.png").exists()  # 2-D points are no images
  sel = _json(tmp_path / "model_selection.json")
  assert sel["k"] == [2, 4, 5] and len(sel["bic"]) == 3 and sel["best_bic"] == 4
  assert run.selection["best_bic"] == 4 and run.results["num_components"] == 4
  assert run.results["test_ari"] > 0.95
  assert abs(run.results["test_log_likelihood"] - run.results["true_test_log_likelihood"]) < 0.1


def test_fit_kmeans_smoke(tmp_path):
  run = kmeans_train.fit_and_evaluate(kmeans_digits.get_config("smoke"), tmp_path, quiet=True)
  _pngs_ok(tmp_path, ["kmeans_clusters.png", "kmeans_inertia.png"])
  results = _json(tmp_path / "results.json")
  records = progress.read_metrics(tmp_path)
  assert [r["step"] for r in records] == list(range(1, results["n_iter"] + 1))
  inertia = [r["inertia"] for r in records]
  assert all(b <= a * (1 + 1e-5) for a, b in zip(inertia, inertia[1:]))  # never rises
  assert run.centroids.shape == (4, 64) and run.labels.shape == (300,)
  np.testing.assert_allclose(results["train_inertia"],
                             ((run.centroids[run.labels] - data.load_splits(
                                 kmeans_digits.get_config("smoke"))[0].x) ** 2).sum(), rtol=1e-4)


def test_fit_kmeans_final_fit_is_the_sweeps(tmp_path, monkeypatch):
  """The sweep has fitted the final K: that fit is the result (every fit of the run is in the
  sweep's program, the largest K), and it scores as the sweep reported it."""
  config = kmeans_digits.get_config("smoke")
  config.k_values = (2, 4, 6)
  config.figures = False
  calls = recording.record_sizes(monkeypatch, kmeans)
  run = kmeans_train.fit_and_evaluate(config, tmp_path, quiet=True)
  assert calls == [6, 6, 6], calls
  assert run.centroids.shape == (4, 64)
  np.testing.assert_allclose(run.results["train_inertia"],
                             run.sweep["inertia"][config.k_values.index(4)], rtol=1e-5)
  records = progress.read_metrics(tmp_path)
  assert [r["step"] for r in records] == list(range(1, run.results["n_iter"] + 1))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("vae")
  config = vae_digits.get_config("smoke")
  run = vae_train.train_and_evaluate(config, workdir, quiet=True)
  return config, workdir, run


def test_train_vae_smoke(vae_run):
  config, workdir, run = vae_run
  _pngs_ok(workdir, ["vae_samples.png", "vae_reconstructions.png", "vae_latent_space.png",
                     "vae_interpolation.png", "vae_training_curves.png"])
  results = _json(workdir / "results.json")
  assert results["step"] == 30 and results["num_points"] == 40
  assert results["log_likelihood"] >= results["elbo"] - 1.0  # the k=20 estimate is above the ELBO
  assert 0 <= results["active_units"] <= 2
  records = progress.read_metrics(workdir)
  assert [r["step"] for r in records] == [10, 20, 30]
  assert all(np.isfinite(r["loss"]) and "grad_norm" in r for r in records)
  assert checkpoint.Checkpointer(workdir).all_steps() == [10, 20, 30]
  assert _json(workdir / "config.json")["latent_dim"] == 2
  assert run.data_shape == (64,) and int(run.state.step) == 30


def test_train_vae_rerun_is_a_no_op_and_evaluate_checkpoint(vae_run):
  config, workdir, run = vae_run
  again = vae_train.train_and_evaluate(config, workdir, quiet=True)  # finished: resumes at 30
  for a, b in zip(jax.tree.leaves(run.state.params), jax.tree.leaves(again.state.params)):
    np.testing.assert_array_equal(a, b)
  assert [r["step"] for r in progress.read_metrics(workdir)] == [10, 20, 30]
  # as if the run were still training and writing step 40: evaluating must leave that save alone
  in_progress = workdir / "checkpoints" / "40.orbax-checkpoint-tmp-99"
  in_progress.mkdir()
  results = vae_train.evaluate_checkpoint(workdir, num_importance_samples=20, step=20,
                                          quiet=True)
  assert in_progress.exists()
  in_progress.rmdir()
  assert results["step"] == 20 and results["num_points"] == 40
  assert results["num_importance_samples"] == 20
  assert results["elbo"] != again.results["elbo"]  # the step-20 parameters, not the final ones
  assert (workdir / "evaluation" / "eval_20_k20.json").exists()
  _pngs_ok(workdir / "evaluation", ["eval_samples.png", "eval_latent_space.png"])


def test_config_mismatch_with_checkpoint(vae_run):
  config, workdir, _ = vae_run
  other = vae_digits.get_config("smoke")
  other.latent_dim = 3
  with pytest.raises(ValueError, match="latent_dim: checkpoint has 2, this run has 3"):
    vae_train.train_and_evaluate(other, workdir, quiet=True)
  longer = vae_digits.get_config("smoke")
  longer.num_steps = 30  # run-length keys may change; equal here so nothing trains
  longer.log_every = 5
  vae_train.validate_config(longer)


def _write_fashion(data_dir, n_train=120, n_test=30):
  rng = np.random.default_rng(0)
  np.savez_compressed(data_dir / "fashion_mnist.npz",
                      x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                      y_train=rng.integers(0, 10, n_train, dtype=np.uint8),
                      x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                      y_test=rng.integers(0, 10, n_test, dtype=np.uint8))


@pytest.mark.slow  # about 30 s on 2 cores: compiling the convolutional networks
def test_conv_iwae_on_a_data_dir(tmp_path):
  _write_fashion(tmp_path)
  config = conv_vae_fashion_mnist.get_config("iwae,smoke")
  config.data_dir = str(tmp_path)
  config.num_steps = 4
  config.log_every = config.checkpoint_every = 2
  config.num_train_points = 0
  config.num_eval_points = 10
  config.num_importance_samples = 3
  config.figures = False
  run = vae_train.train_and_evaluate(config, tmp_path / "run", quiet=True)
  assert run.data_shape == (28, 28, 1) and config.model == "iwae" and config.num_samples == 5
  assert np.isfinite(run.results["log_likelihood"])
  assert [r["step"] for r in progress.read_metrics(tmp_path / "run")] == [2, 4]


def test_autoencoder_smoke(tmp_path):
  config = vae_digits.get_config("ae,smoke")
  config.num_steps = 10
  config.figures = False
  run = vae_train.train_and_evaluate(config, tmp_path, quiet=True)
  assert set(run.results) >= {"reconstruction_log_likelihood", "active_units"}
  assert "log_likelihood" not in run.results


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path):
  config = vae_digits.get_config("smoke")
  config.learning_rate = 1e30
  config.log_every = config.checkpoint_every = 1
  config.figures = False
  with pytest.raises(experiment.NonFiniteLossError,
                     match=r"loss is (nan|inf) at step \d+ .*last good checkpoint, step \d+"):
    vae_train.train_and_evaluate(config, tmp_path, quiet=True)
  ckpt = checkpoint.Checkpointer(tmp_path)
  last = ckpt.latest_step()
  assert last is not None
  meta = ckpt.restore_meta()
  assert meta["step"] == last
  _, _, state, _ = vae_train.restore_run(tmp_path)
  assert all(bool(np.all(np.isfinite(a))) for a in jax.tree.leaves(state.params))


@pytest.mark.parametrize("field,value,match", [
    ("dataset", "cifar10", "Unknown dataset 'cifar10'"),
    ("learning_rate", -1e-3, "config.learning_rate must be a finite number > 0"),
    ("batch_size", -5, "config.batch_size must be >= 1"),
    ("latent_dim", 0, "config.latent_dim must be >= 1"),
    ("num_steps", -1, "config.num_steps must be >= 0"),
    ("model", "gan", "Unknown config.model 'gan'"),
    ("architecture", "conv", "needs 28x28 images"),
    ("hidden", (32, -1), "hidden must be >= 1"),
])
def test_bad_vae_configs_fail_at_start(tmp_path, field, value, match):
  config = vae_digits.get_config("smoke")
  config[field] = value
  with pytest.raises(ValueError, match=match):
    vae_train.train_and_evaluate(config, tmp_path, quiet=True)
  assert not (tmp_path / "checkpoints").exists()


def test_missing_data_file_fails_at_start(tmp_path, monkeypatch):
  monkeypatch.setenv("LVMJAX_NO_DOWNLOAD", "1")
  config = vae_binarized_mnist.get_config("smoke")
  config.data_dir = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match=r"binarized_mnist.npz does not exist"):
    vae_train.train_and_evaluate(config, tmp_path / "run", quiet=True)


@pytest.mark.parametrize("module,field,value,match", [
    (gmm_digits, "reg_covar", -1.0, "config.reg_covar must be a finite number >= 0"),
    (gmm_digits, "covariance_type", "banded", "Unknown config.covariance_type"),
    (gmm_digits, "num_components", 0, "config.num_components must be >= 1"),
    (gmm_digits, "num_components", 5000, "larger than the 300 training points"),
    (gmm_digits, "select_k", "bic", None),
    (gmm_digits, "dataset", "imagenet", "Unknown dataset"),
    (kmeans_digits, "num_clusters", -2, "config.num_clusters must be >= 1"),
    (kmeans_digits, "tol", -1e-4, "config.tol must be a finite number >= 0"),
])
def test_bad_fit_configs_fail_at_start(tmp_path, module, field, value, match):
  config = module.get_config("smoke")
  config[field] = value
  if field == "select_k":
    config.k_values = ()
    match = "needs config.k_values"
  train = gmm_train if module is gmm_digits else kmeans_train
  with pytest.raises(ValueError, match=match):
    train.fit_and_evaluate(config, tmp_path, quiet=True)


def test_adjusted_rand_index_against_sklearn():
  from sklearn.metrics import adjusted_rand_score  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for _ in range(10):
    a = rng.integers(0, 5, 300)
    b = np.where(rng.random(300) < 0.6, a, rng.integers(0, 7, 300))
    assert abs(experiment.adjusted_rand_index(a, b) - adjusted_rand_score(a, b)) < 1e-12
  assert experiment.adjusted_rand_index([0, 0, 1, 1], [5, 5, 2, 2]) == 1.0


def test_launcher_runs_as_a_script(tmp_path):
  """`python experiments/fit_gmm.py` (not -m), from another directory, with --config overrides."""
  cmd = [sys.executable, str(REPO / "experiments" / "fit_gmm.py"), "--workdir", str(tmp_path),
         "--config", str(REPO / "configs" / "gmm_synthetic.py") + ":smoke",
         "--config.k_values=()", "--config.select_k=none", "--config.max_iter=5", "--quiet"]
  env = processes.environment(importable=False)  # the script finds the repository itself
  out = processes.run(cmd, cwd="/", timeout=300, env=env)
  assert "Results:" in out.stdout and "test_log_likelihood" in out.stdout
  shown = [line for line in (out.stdout + out.stderr).splitlines()
           if "test_log_likelihood" in line and "true_test" not in line]
  assert len(shown) == 1, shown  # the results are shown once (not also logged)
  assert _json(tmp_path / "config.json")["max_iter"] == 5
  assert _json(tmp_path / "results.json")["n_iter"] <= 5
  bad = processes.run(cmd[:2] + ["--workdir", tmp_path / "b", "--config.nonexistent=1"],
                      cwd="/", timeout=120, env=env, check=False)
  assert bad.returncode != 0 and "nonexistent" in bad.stderr


def _launch(module, *args, cwd=REPO, env=None, timeout=300):
  """Runs ``python -m experiments.<module> args`` (CPU) and returns the CompletedProcess."""
  return processes.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=cwd,
                       timeout=timeout, env=processes.environment(**(env or {})), check=False)


@pytest.mark.parametrize("module", ["fit_gmm", "fit_kmeans", "train_vae"])
def test_typo_in_a_config_field_names_the_closest_field_without_a_traceback(tmp_path, module):
  field = {"fit_gmm": "num_components", "fit_kmeans": "num_clusters",
           "train_vae": "learning_rate"}[module]
  typo = field[:-3] + field[-2] + field[-3] + field[-1]  # two letters swapped
  out = _launch(module, "--workdir", str(tmp_path / "run"), f"--config.{typo}=3")
  assert out.returncode == 2, out.stderr[-2000:]
  assert f"Unknown config field '{typo}'" in out.stderr
  assert f"Did you mean --config.{field}?" in out.stderr
  assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) <= 3
  assert not (tmp_path / "run").exists()
  debug = _launch(module, "--workdir", str(tmp_path / "run"), f"--config.{typo}=3", "--debug")
  assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_config_field_check_unit():
  from experiments import common  # pylint: disable=g-import-not-at-top
  default = str(REPO / "configs" / "gmm_synthetic.py")
  assert common.config_argument_problem(["--config.num_components=3"], default) is None
  assert common.config_argument_problem(["--config.synthetic.seed", "3"], default) is None
  msg = common.config_argument_problem(["--workdir=x", "--config.synthetic.sed=3"], default)
  assert "Unknown config field 'synthetic.sed'" in msg and "--config.synthetic.seed?" in msg
  msg = common.config_argument_problem(["--config", default + ":smok"], default)
  assert "could not be loaded" in msg and "Unknown variant 'smok'" in msg
  assert "k_values" in common.config_fields(gmm_synthetic.get_config())
  assert "synthetic.num_points" in common.config_fields(gmm_synthetic.get_config())


def test_launcher_errors_of_the_user_are_one_message(tmp_path):
  """Missing data and a workdir that is a file: one message, non-zero exit, no empty workdir."""
  smoke = ["--config", str(REPO / "configs" / "gmm_digits.py") + ":smoke"]
  out = _launch("fit_gmm", "--workdir", str(tmp_path / "new" / "run"), *smoke,
                "--config.dataset=mnist", f"--config.data_dir={tmp_path / 'nowhere'}",
                env={"LVMJAX_NO_DOWNLOAD": "1"})
  assert out.returncode == 1, out.stderr[-2000:]
  assert "mnist.npz does not exist" in out.stderr and "Traceback" not in out.stderr
  assert "--debug" in out.stderr
  assert not (tmp_path / "new").exists()  # the failed start removed the directories it made
  (tmp_path / "file").write_text("x")
  out = _launch("fit_kmeans", "--workdir", str(tmp_path / "file"),
                "--config", str(REPO / "configs" / "kmeans_digits.py") + ":smoke")
  assert out.returncode == 1 and "exists and is not a directory" in out.stderr
  assert "Traceback" not in out.stderr
  out = _launch("fit_kmeans", "--workdir", str(tmp_path / "km"), *smoke)  # a GMM config
  assert out.returncode == 1 and "config has no field 'num_clusters'" in out.stderr
  assert "configs/kmeans_digits.py" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "km").exists()
  out = _launch("fit_gmm", *smoke)
  assert out.returncode == 1 and "--workdir is required" in out.stderr
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize("module", ["fit_gmm", "fit_kmeans", "train_vae", "evaluate_vae"])
def test_helpshort_shows_workdir_and_config(module):
  out = _launch(module, "--helpshort", timeout=120)
  assert "Traceback" not in out.stderr, out.stderr[-2000:]  # (absl exits 1 after help)
  assert "--workdir" in out.stdout and "--[no]debug" in out.stdout
  if module != "evaluate_vae":  # evaluate_vae reads the config stored with the checkpoint
    assert "--config" in out.stdout


def test_the_install_adds_no_generic_top_level_modules():
  """Only lvmjax is installed; configs/ and experiments/ run from the checkout."""
  # setuptools' `find:` with `include` patterns, read without setuptools (a Python >= 3.12 venv has
  # none): every folder with an __init__.py whose dotted name matches an include pattern.
  import configparser, fnmatch  # pylint: disable=g-import-not-at-top,g-multiple-import
  cfg = configparser.ConfigParser()
  cfg.read(REPO / "setup.cfg")
  assert cfg["options"]["packages"].strip() == "find:"
  include = cfg["options.packages.find"]["include"].split()
  found = {".".join(init.parent.relative_to(REPO).parts) for init in REPO.glob("**/__init__.py")
           if not any(part.startswith(".") for part in init.relative_to(REPO).parts)}
  packages = {p for p in found if any(fnmatch.fnmatchcase(p, pat) for pat in include)}
  assert "configs" in found and "experiments" in found  # they exist, and are left out:
  assert {p.split(".")[0] for p in packages} == {"lvmjax"}
  assert "lvmjax.gmm" in packages and "lvmjax.data" in packages
