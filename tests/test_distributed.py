"""Multi-device and multi-host fits give the one-device results (each case in a subprocess).

* Eight simulated CPU devices (``--xla_force_host_platform_device_count=8``) in one process:
  ``gmm.fit`` and ``kmeans.fit`` with ``mesh=`` (1003 rows, not a multiple of 8) and on rows
  already sharded by ``sharding.shard_rows``, E-/EM steps on sharded rows (eager and jitted),
  and streamed EM with each batch split over the devices, against the one-device results in
  float64; five data-parallel VAE steps against five one-device steps.
* Two processes on localhost joined by ``jax.distributed`` (gloo CPU collectives), two devices
  each; every process loads only its own rows (``sharding.rows_from_processes``).
* Two such processes running the GMM launcher's library function on a small ``mnist.npz`` (each
  reads only its own rows from the file; the results equal a one-process run's) and streamed EM
  with each process streaming its own rows (equal to the in-memory fit of all rows).

The default run holds the second case (GMM, K-means and VAE steps on a mesh spanning two processes);
the eight-device case and the two-process launcher and streaming cases are ``slow`` (each is a
subprocess that compiles every program again: 2.5-4 min of the default suite's CPU between them).

The subprocesses keep the simulated devices and the distributed runtime out of this process. The
work is in ``tests/scale_worker.py`` and ``tests/multihost_worker.py``; here only the launching
and the assertions.
"""
import json
import os
import sys

import numpy as np
import pytest

from tests import processes

TIMEOUT = 900  # seconds; generous for a loaded 2-core machine


def _env(**changes):
  return processes.environment(drop=("XLA_FLAGS",), **changes)


def _check_gmm(case, tol=1e-10):
  assert case["n_iter"][0] == case["n_iter"][1], case
  for name in ("means", "covariances", "weights", "lower_bound"):
    assert case[name] < tol, (name, case)


def _check_kmeans(case):
  assert case["n_iter"][0] == case["n_iter"][1], case
  assert case["labels_equal"], case
  assert case["centroids"] < 1e-10 and case["inertia_rel"] < 1e-12, case


def _check_vae(case):
  # float32: the devices add their parts of the gradient in another order than one device.
  np.testing.assert_allclose(case["loss_parallel"], case["loss_single"], rtol=2e-6)
  assert case["param_diff"] < 1e-5, case


@pytest.mark.slow
def test_eight_simulated_devices(tmp_path):
  out = tmp_path / "devices.json"
  processes.run([sys.executable, "-m", "tests.scale_worker", "devices", out], timeout=TIMEOUT,
                env=_env())
  res = json.loads(out.read_text())
  assert res["num_devices"] == 8
  _check_vae(res["vae"])
  for name in ("gmm_kmeans_full", "gmm_random_diag", "gmm_presharded_tied",
               "gmm_streamed_sharded"):
    _check_gmm(res[name])
  assert res["e_step"] < 1e-9, res["e_step"]
  _check_kmeans(res["kmeans"])
  _check_kmeans(res["kmeans_relocation"])


def test_two_processes_joined_by_jax_distributed(tmp_path):
  port = processes.free_port()
  _run_all([[sys.executable, "-m", "tests.scale_worker", "process", str(i), "2", str(port),
             str(tmp_path)] for i in range(2)], tmp_path)
  res = json.loads((tmp_path / "result.json").read_text())
  assert res["process_count"] == 2 and res["device_count"] == 4
  _check_vae(res["vae"])
  _check_gmm(res["gmm_kmeans_full"])
  _check_kmeans(res["kmeans"])


def _launch(module, nproc, out_dir, *args):
  """Runs ``python -m module PID NPROC PORT OUT_DIR *args`` for every process (see _run_all)."""
  port = processes.free_port()
  _run_all([[sys.executable, "-m", module, str(i), str(nproc), str(port), str(out_dir), *args]
            for i in range(nproc)], out_dir)


def _run_all(commands, out_dir):
  """Runs the commands at once (one process each, logs in out_dir/log<i>.txt); all must exit 0."""
  processes.run_together(commands, out_dir, timeout=TIMEOUT, env=_env())


def _small_mnist(data_dir):
  """An mnist.npz in the documented layout: 402 train and 101 test 4x4 images of 3 blobs."""
  rng = np.random.default_rng(0)
  centres = rng.uniform(40, 215, (3, 16))
  arrays = {}
  for split, n in (("train", 402), ("test", 101)):
    y = rng.integers(0, 3, n)
    x = np.clip(centres[y] + rng.normal(0, 12, (n, 16)), 0, 255).round().astype(np.uint8)
    arrays[f"x_{split}"], arrays[f"y_{split}"] = x.reshape(n, 4, 4), y.astype(np.uint8)
  data_dir.mkdir()
  np.savez_compressed(data_dir / "mnist.npz", **arrays)


def _gmm_config(data_dir):
  from configs import gmm_digits  # pylint: disable=g-import-not-at-top
  config = gmm_digits.get_config("smoke")
  config.update(dict(dataset="mnist", data_dir=str(data_dir), num_train_points=0,
                     num_components=3, covariance_type="diag", init="k-means++", max_iter=30,
                     tol=1e-5, k_values=(), checkpoint_every=4))
  return config


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
  """Two processes (2 devices each) run tests/multihost_worker.py; returns its output folder."""
  out = tmp_path_factory.mktemp("hosts")
  _small_mnist(out / "data")
  (out / "config.json").write_text(_gmm_config(out / "data").to_json())
  rng = np.random.default_rng(3)
  means = np.array([[0., 0., 0.], [5., 5., 0.], [0., 6., 6.], [7., 0., 7.]])
  x = means[rng.integers(0, 4, 1003)] + rng.normal(size=(1003, 3))
  np.savez(out / "stream.npz", x=x, w=rng.uniform(0.5, 2.0, 1003))
  _launch("tests.multihost_worker", 2, out)
  return out


@pytest.mark.slow
def test_fit_gmm_on_two_processes_reads_only_its_rows_and_matches_one_process(two_hosts,
                                                                             tmp_path):
  """fit_and_evaluate on 2 processes x 2 devices: each process reads only its block of each
  split (numpy.load of the file is forbidden there), and the parameters, metrics and
  results.json equal those of one process (one device) on the whole data."""
  from lvmjax import data  # pylint: disable=g-import-not-at-top
  from lvmjax.gmm import train as gmm_train  # pylint: disable=g-import-not-at-top
  from lvmjax.sharding import process_rows  # pylint: disable=g-import-not-at-top
  for pid in range(2):
    calls = json.loads((two_hosts / f"p{pid}.json").read_text())["load_calls"]
    assert [c["split"] for c in calls] == ["train", "test"], calls
    for c, n in zip(calls, (402, 101)):
      block = process_rows(n, pid, 2, multiple=2)
      assert c["rows"] == [block.start, block.stop], (pid, c)
      assert c["num_points"] == block.stop - block.start < n, (pid, c)
  config = _gmm_config(two_hosts / "data")
  config.figures = False  # (only the two-process run draws them)
  one = gmm_train.fit_and_evaluate(config, tmp_path, quiet=True)
  two = json.loads((two_hosts / "gmm" / "results.json").read_text())
  assert set(two) == set(one.results)
  for name, value in one.results.items():
    if isinstance(value, float):
      np.testing.assert_allclose(two[name], value, rtol=1e-5, err_msg=name)
    else:
      assert two[name] == value, name
  assert two["num_train_points"] == 402 and 0 < two["train_ari"] <= 1
  params = np.load(two_hosts / "gmm_params.npz")
  for name in ("weights", "means", "covariances"):
    np.testing.assert_allclose(params[name], getattr(one.params, name), rtol=1e-4, atol=1e-5,
                               err_msg=name)
  np.testing.assert_allclose(params["log_likelihood"], one.log_likelihood, rtol=1e-5)
  # Process 0 wrote the files (figures from its own rows).
  metrics = [json.loads(line) for line in (two_hosts / "gmm" / "metrics.jsonl").open()]
  assert len(metrics) == two["n_iter"]
  assert (two_hosts / "gmm" / "gmm_components.png").stat().st_size > 5000
  assert data.num_rows("mnist", "train", data_dir=two_hosts / "data") == 402


@pytest.mark.slow
def test_streamed_em_on_two_processes_equals_the_in_memory_fit(two_hosts):
  """Each process streams only its rows (a memmap with weights split over its devices, or a
  callable of (x, w) batches); statistics summed over processes give the in-memory fit of all
  rows (float64), and a NaN on one process stops every process with a ValueError."""
  for pid in range(2):
    res = json.loads((two_hosts / f"p{pid}.json").read_text())
    c = res["stream_kpp"]
    assert c["n_iter"][0] == c["n_iter"][1] and c["n_iter"][0] > 2, (pid, c)
    assert c["params"] < 1e-9 and c["log_likelihood"] < 1e-12, (pid, c)  # relative
    assert res["stream_stats"] < 1e-9, res["stream_stats"]
    expected = "NaN" if pid == 1 else "other process"  # process 1 holds the NaN
    assert res["nan_error"] is not None and expected in res["nan_error"], res


LAUNCHERS = [
    # The main job's launcher also runs by default (~15 s): the slow marks had hidden that its
    # model-selection path wrote a checkpoint two processes could not save.
    ("fit_gmm", "configs/gmm_synthetic.py:smoke", ["--config.checkpoint_every=5"]),
    pytest.param("fit_kmeans", "configs/kmeans_digits.py:smoke", ["--config.checkpoint_every=3"],
                 marks=pytest.mark.slow),
    pytest.param("train_vae", "configs/vae_digits.py:smoke",
                 ["--config.batch_size=16", "--config.figures=False"], marks=pytest.mark.slow),
]


@pytest.mark.parametrize("launcher,config,extra", LAUNCHERS)
def test_launcher_on_two_processes_matches_one_process(tmp_path, launcher, config, extra):
  """The launchers' own multi-host flags: 2 processes x 2 devices, data-parallel, each process
  reading its own rows, process 0 writes. GMM and K-means give the one-process results; the VAE
  draws each process's share of every batch from its own rows, so its batches (and numbers)
  differ from one process's: there the run must finish with the same steps and finite results."""
  def command(workdir, *flags):
    return [sys.executable, os.path.join("experiments", launcher + ".py"), "--config", config,
            "--workdir", str(workdir), "--quiet", *extra, *flags]

  processes.run(command(tmp_path / "one"), timeout=TIMEOUT, env=_env())
  port = processes.free_port()
  processes.run_together(
      [command(tmp_path / "two", f"--coordinator_address=localhost:{port}", "--num_processes=2",
               f"--process_id={i}") for i in range(2)], tmp_path, timeout=TIMEOUT,
      env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  one = json.loads((tmp_path / "one" / "results.json").read_text())
  two = json.loads((tmp_path / "two" / "results.json").read_text())
  assert set(one) == set(two)
  for name, value in one.items():
    if "seconds" in name:
      continue
    if launcher == "train_vae" and name not in ("step", "epochs", "num_points", "eval_split",
                                                "num_importance_samples", "num_parameters"):
      assert np.all(np.isfinite(two[name])), name  # other batches: other (finite) numbers
    elif isinstance(value, float):
      np.testing.assert_allclose(two[name], value, rtol=1e-5, err_msg=name)
    else:
      assert two[name] == value, name
  if launcher == "train_vae":
    # The two processes evaluated the trained parameters on their own blocks of the evaluation
    # points; one process evaluating the same checkpoint on all of them gets the same figures.
    k = two["num_importance_samples"]
    processes.run([sys.executable, os.path.join("experiments", "evaluate_vae.py"), "--workdir",
                   tmp_path / "two", f"--num_importance_samples={k}", "--figures=False",
                   "--quiet"], timeout=TIMEOUT, env=_env())
    ev = json.loads((tmp_path / "two" / "evaluation" / f"eval_{two['step']}_k{k}.json")
                    .read_text())
    for name in ("elbo", "kl", "reconstruction", "log_likelihood", "active_units", "num_points"):
      np.testing.assert_allclose(ev[name], two[name], rtol=1e-5, err_msg=name)
