"""Multi-device and multi-host fits give the one-device results (each case in a subprocess).

* Eight simulated CPU devices (``--xla_force_host_platform_device_count=8``) in one process:
  ``gmm.fit`` and ``kmeans.fit`` with ``mesh=`` (1003 rows, not a multiple of 8) and on rows
  already sharded by ``sharding.shard_rows``, E-/EM steps on sharded rows (eager and jitted),
  and streamed EM with each batch split over the devices, against the one-device results in
  float64; five data-parallel VAE steps against five one-device steps.
* Two processes on localhost joined by ``jax.distributed`` (gloo CPU collectives), two devices
  each; every process loads only its own rows (``sharding.rows_from_processes``).

The subprocesses keep the simulated devices and the distributed runtime out of this process. The
work is in ``tests/scale_worker.py``; here only the launching and the assertions.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 900  # seconds; generous for a loaded 2-core machine


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.pop("XLA_FLAGS", None)
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


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


def test_eight_simulated_devices(tmp_path):
  out = tmp_path / "devices.json"
  proc = subprocess.run([sys.executable, "-m", "tests.scale_worker", "devices", str(out)],
                        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-4000:]
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
  port = _free_port()
  logs = [open(tmp_path / f"p{i}.log", "w") for i in range(2)]  # pylint: disable=consider-using-with
  procs = [subprocess.Popen([sys.executable, "-m", "tests.scale_worker", "process", str(i), "2",
                             str(port), str(tmp_path)], cwd=REPO, env=_env(), stdout=logs[i],
                            stderr=subprocess.STDOUT) for i in range(2)]
  try:
    codes = [p.wait(timeout=TIMEOUT) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for f in logs:
      f.close()
  tails = "\n".join((tmp_path / f"p{i}.log").read_text()[-3000:] for i in range(2))
  assert codes == [0, 0], tails
  res = json.loads((tmp_path / "result.json").read_text())
  assert res["process_count"] == 2 and res["device_count"] == 4
  _check_vae(res["vae"])
  _check_gmm(res["gmm_kmeans_full"])
  _check_kmeans(res["kmeans"])


LAUNCHERS = [
    ("fit_gmm", "configs/gmm_synthetic.py:smoke", ["--config.checkpoint_every=5"]),
    ("fit_kmeans", "configs/kmeans_digits.py:smoke", ["--config.checkpoint_every=3"]),
    ("train_vae", "configs/vae_digits.py:smoke", ["--config.batch_size=16",
                                                  "--config.figures=False"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("launcher,config,extra", LAUNCHERS)
def test_launcher_on_two_processes_matches_one_process(tmp_path, launcher, config, extra):
  """The launchers' own multi-host flags: 2 processes x 2 devices, data-parallel, process 0
  writes; the results equal a one-process run's."""
  def command(workdir, *flags):
    return [sys.executable, os.path.join("experiments", launcher + ".py"), "--config", config,
            "--workdir", str(workdir), "--quiet", *extra, *flags]

  single = subprocess.run(command(tmp_path / "one"), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
  assert single.returncode == 0, single.stderr[-3000:]
  port = _free_port()
  env = dict(_env(), XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen(command(tmp_path / "two", f"--coordinator_address=localhost:{port}",
                                    "--num_processes=2", f"--process_id={i}"),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
  one = json.loads((tmp_path / "one" / "results.json").read_text())
  two = json.loads((tmp_path / "two" / "results.json").read_text())
  assert set(one) == set(two)
  for name, value in one.items():
    if "seconds" in name:
      continue
    if isinstance(value, float):
      np.testing.assert_allclose(two[name], value, rtol=1e-5, err_msg=name)
    else:
      assert two[name] == value, name
