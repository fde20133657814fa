"""Every core without opt-in: ``import lvmjax`` makes one JAX CPU device per core, and large fits
whose caller names no mesh split their rows over them (``sharding.auto_placement``).

The device count is fixed when JAX creates its CPU backend, so every case runs in a fresh Python
with a time limit (a hang fails the test instead of stalling the suite).
"""
import json
import os

import numpy as np
import pytest

from tests import processes

_REPORT = ("import jax, json; from lvmjax import sharding; "
           "print('RESULT', json.dumps(dict(devices=jax.device_count(), "
           "by_default=sharding.cores_by_default(), spread=sharding.spread_devices())))")


def _python(code: str, check: bool = True, **env_changes):
  """``code`` in a fresh Python whose device count nothing has fixed (but ``env_changes``)."""
  env = processes.environment(
      drop=("XLA_FLAGS", "JAX_NUM_CPU_DEVICES", "LVMJAX_CPU_DEVICES"), **env_changes)
  return processes.python(code, timeout=120, env=env, check=check)


def _report(prefix: str, **env_changes) -> dict:
  return processes.result(_python(prefix + _REPORT, **env_changes))


def test_import_makes_one_device_per_core():
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  got = _report("import lvmjax; ")
  assert got["devices"] == cores
  assert got["by_default"] == (cores > 1)
  assert not got["spread"]  # the launchers' data-parallel paths stay on one device


@pytest.mark.parametrize("prefix, env, devices, by_default, spread", [
    # LVMJAX_CPU_DEVICES picks the count; 1 leaves JAX's single device.
    ("import lvmjax; ", dict(LVMJAX_CPU_DEVICES="3"), 3, True, False),
    ("import lvmjax; ", dict(LVMJAX_CPU_DEVICES="1"), 1, False, False),
    # A count the user fixed wins: XLA_FLAGS, JAX_NUM_CPU_DEVICES, jax.config before the import.
    ("import lvmjax; ", dict(LVMJAX_CPU_DEVICES="3",
                             XLA_FLAGS="--xla_force_host_platform_device_count=2"), 2, False, True),
    ("import lvmjax; ", dict(LVMJAX_CPU_DEVICES="3", JAX_NUM_CPU_DEVICES="2"), 2, False, True),
    ("import jax; jax.config.update('jax_num_cpu_devices', 2); import lvmjax; ",
     dict(LVMJAX_CPU_DEVICES="3"), 2, False, True),
    # ... and so does one after the import, before the first computation.
    ("import lvmjax; from lvmjax import sharding; sharding.use_cpu_cores(2); ",
     dict(LVMJAX_CPU_DEVICES="3"), 2, False, True),
    ("import lvmjax; import jax; jax.config.update('jax_num_cpu_devices', 2); ",
     dict(LVMJAX_CPU_DEVICES="3"), 2, False, True),
    # A computation before the import: the backend exists, nothing changes, no error.
    ("import jax; jax.numpy.zeros(1).block_until_ready(); import lvmjax; ",
     dict(LVMJAX_CPU_DEVICES="3"), 1, False, False),
])
def test_who_fixes_the_device_count(prefix, env, devices, by_default, spread):
  got = _report(prefix, **env)
  assert got == dict(devices=devices, by_default=by_default, spread=spread)


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_cpu_devices_variable_is_a_clear_error(value):
  proc = _python("import lvmjax", check=False, LVMJAX_CPU_DEVICES=value)
  assert proc.returncode != 0
  assert "ValueError" in proc.stderr and "LVMJAX_CPU_DEVICES" in proc.stderr
  assert "positive number of host CPU devices" in proc.stderr


@pytest.mark.parametrize("flag, want", [("1", 1), ("0", "cores"), ("3", 3)])
def test_launcher_flag_wins_over_the_import_default(tmp_path, flag, want):
  """--cpu_devices=1 (the launchers' default) keeps one device; 0 takes one per core."""
  code = ("import sys, jax; sys.argv = ['launcher', '--cpu_devices=" + flag + "', "
          f"'--workdir={tmp_path}']; from absl import flags; from experiments import common; "
          "common.define_flags('kmeans_digits.py'); flags.FLAGS(sys.argv); common.start(); "
          "print('RESULT', jax.device_count())")
  got = processes.result(_python(code, LVMJAX_CPU_DEVICES="3",
                                 XDG_CACHE_HOME=str(tmp_path / "cache")))
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  assert got == (cores if want == "cores" else want)


# --------------------------------------------------------------------------------------------
# Automatic mesh: run in a subprocess of 2 CPU devices by tests/processes.py.


def _auto_main():
  """Fits of NumPy data (automatic mesh) against the same fits of data committed to device 0
  (one device), float64, with the size thresholds lowered so that small data take the mesh."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_enable_x64", True)
  from lvmjax import gmm, kmeans, sharding  # pylint: disable=g-import-not-at-top
  from lvmjax.gmm import bayesian, factor  # pylint: disable=g-import-not-at-top
  from lvmjax.sharding import mesh as mesh_module  # pylint: disable=g-import-not-at-top

  out = {"devices": jax.device_count()}
  x = _clusters(np.float64)
  # The real thresholds: this data is far too small for a mesh.
  out["small_real_threshold"] = sharding.auto_placement(x, 3) is None
  big = np.zeros((8 * mesh_module.AUTO_MESH_MIN_ROWS, 256), np.float32)
  out["big_real_threshold"] = sharding.auto_placement(big, 8) is not None
  mesh_module.AUTO_MESH_MIN_ROWS, mesh_module.AUTO_MESH_MIN_WORK = 64, 1000
  placed = []
  real_place_rows = sharding.place_rows

  def spy(*args, **kwargs):
    placed.append(True)
    return real_place_rows(*args, **kwargs)

  sharding.place_rows = spy
  one = jax.device_put(x, jax.devices()[0])
  auto = sharding.auto_placement(x, 3)
  out["auto_devices"] = 0 if auto is None else int(auto.mesh.devices.size)
  out["committed_stays"] = sharding.auto_placement(one, 3) is None
  out["traced_stays"] = bool(jax.jit(lambda a: sharding.auto_placement(a, 3) is None)(x) is not
                             None)

  def compare(name, fit, leaves):
    placed.clear()
    r_auto = fit(x)
    used_mesh = len(placed) > 0
    placed.clear()
    r_one = fit(one)
    one_used_mesh = len(placed) > 0
    a, b = leaves(r_auto), leaves(r_one)
    out[name] = dict(
        used_mesh=used_mesh, one_used_mesh=one_used_mesh,
        diff=max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
                 for u, v in zip(a, b)),
        on_first_device=all(set(leaf.devices()) == {jax.devices()[0]}
                            for leaf in jax.tree.leaves(r_auto) if hasattr(leaf, "devices")))

  key = jax.random.key(0)
  compare("gmm", lambda d: gmm.fit(key, d, 3, "full", max_iter=20),
          lambda r: [r.params.weights, r.params.means, r.params.covariances, r.n_iter,
                     r.log_likelihood])
  compare("gmm_random", lambda d: gmm.fit(key, d, 3, "diag", init="random", max_iter=20),
          lambda r: [r.params.means, r.params.covariances, r.n_iter])
  compare("kmeans", lambda d: kmeans.fit(key, d, 3),
          lambda r: [r.centroids, r.labels, r.inertia, r.n_iter])
  compare("kmeans_random", lambda d: kmeans.fit(key, d, 3, init="random", n_init=2),
          lambda r: [r.centroids, r.labels, r.inertia, r.n_iter])
  compare("bayesian", lambda d: bayesian.fit(key, d, 4, "full", max_iter=20),
          lambda r: [r.params.means, r.n_iter, r.lower_bound])
  compare("factor", lambda d: factor.fit(key, d, 3, rank=1, max_iter=20),
          lambda r: [r.params.means, r.params.noise, r.n_iter])
  print("RESULT " + json.dumps(out))


def _clusters(dtype, n=640, seed=0):
  rng = np.random.default_rng(seed)
  centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, 7.0, -2.0]])
  z = rng.choice(3, n, p=[0.3, 0.3, 0.4])
  return (centres[z] + rng.normal(size=(n, 3))).astype(dtype)


def test_large_fits_split_over_the_cpu_devices_and_equal_the_one_device_fit():
  out = processes.on_cpu_devices("test_default_devices", "_auto_main", 2, timeout=300)
  assert out["devices"] == 2
  assert out["small_real_threshold"] and out["big_real_threshold"]
  assert out["auto_devices"] == 2
  assert out["committed_stays"] and out["traced_stays"]
  for name in ("gmm", "gmm_random", "kmeans", "kmeans_random", "bayesian", "factor"):
    r = out[name]
    assert r["used_mesh"] and not r["one_used_mesh"], (name, r)
    assert r["on_first_device"], (name, r)
    assert r["diff"] < 1e-9, (name, r)
