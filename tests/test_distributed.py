"""Multi-device and multi-host fits give the one-device results (each case in a subprocess).

* Eight simulated CPU devices (``--xla_force_host_platform_device_count=8``) in one process:
  ``gmm.fit`` and ``kmeans.fit`` with ``mesh=`` (1003 rows, not a multiple of 8) and on rows
  already sharded by ``sharding.shard_rows``, against the one-device fits in float64; five
  data-parallel VAE steps against five one-device steps.
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
  for name in ("gmm_kmeans_full", "gmm_random_diag", "gmm_presharded_tied"):
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
