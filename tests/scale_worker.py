"""Subprocess body of tests/test_distributed.py (not a test module: it needs its own JAX start-up).

``python -m tests.scale_worker devices OUT.json``: 8 simulated CPU devices in one process; sharded
GMM and K-means fits against one-device fits, data-parallel VAE steps against one-device steps.

``python -m tests.scale_worker process PID NPROC PORT OUT_DIR``: one of NPROC processes on
localhost (2 CPU devices each) joined by ``jax.distributed`` with gloo collectives; each process
loads only its own rows. Process 0 writes OUT_DIR/result.json.

Each prints nothing on success except JAX's own messages; the results are JSON numbers (maximum
absolute differences, iteration counts) that the test asserts on.
"""
import json
import os
import sys


def _data(n=1003, seed=0):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  means = np.array([[0., 0., 0.], [5., 5., 0.], [0., 6., 6.], [7., 0., 7.]])
  x = means[rng.integers(0, 4, n)] + rng.normal(size=(n, 3))
  w = rng.uniform(0.5, 2.0, n)
  return x, w


def _vae_case(mesh):
  """Five data-parallel steps against five one-device steps: the losses and the params."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from lvmjax import vae  # pylint: disable=g-import-not-at-top
  from lvmjax.vae import parallel  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  x = (rng.random((5, 32, 16)) < 0.4).astype(np.float32)
  model = vae.VAE(vae.MLPEncoder(2, (16,)), vae.MLPDecoder(16, (16,)), vae.BernoulliLikelihood())
  opt = optax.adam(1e-2)
  key = jax.random.key(3)
  host = jax.device_get(vae.create_train_state(jax.random.key(0), model, x[0], opt))
  single = vae.jit_train_step(model, opt, objective="elbo", num_samples=2)
  step = parallel.make_parallel_train_step(model, opt, mesh, objective="elbo", num_samples=2)
  s1 = jax.tree.map(np.array, host)
  s2 = parallel.replicate(host, mesh)
  losses1, losses2 = [], []
  for b in range(5):
    s1, m1 = single(s1, x[b], key)
    s2, m2 = step(s2, parallel.shard_batch(x[b], mesh), key)
    losses1.append(float(m1["loss"]))
    losses2.append(float(m2["loss"]))
  pdiff = max(_diff(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(s1.params)),
                                          jax.tree.leaves(jax.device_get(s2.params))))
  return {"loss_single": losses1, "loss_parallel": losses2, "param_diff": pdiff}


def _diff(a, b):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _gmm_case(single, sharded):
  return {"means": _diff(single.params.means, sharded.params.means),
          "covariances": _diff(single.params.covariances, sharded.params.covariances),
          "weights": _diff(single.params.weights, sharded.params.weights),
          "lower_bound": _diff(single.lower_bound, sharded.lower_bound),
          "n_iter": [int(single.n_iter), int(sharded.n_iter)]}


def _kmeans_case(single, sharded):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  labels = sharded.labels
  if not labels.is_fully_addressable:  # spread over processes: gather the global labels
    labels = multihost_utils.process_allgather(labels, tiled=True)
  return {"centroids": _diff(single.centroids, sharded.centroids),
          "inertia_rel": abs(float(single.inertia) / float(sharded.inertia) - 1),
          "labels_equal": bool(np.array_equal(np.asarray(single.labels),
                                              np.asarray(labels))),
          "n_iter": [int(single.n_iter), int(sharded.n_iter)]}


def run_devices(out):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lvmjax import gmm, kmeans, sharding  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8, jax.devices()
  mesh = sharding.data_mesh()
  res = {"num_devices": jax.device_count()}

  res["vae"] = _vae_case(mesh)
  with jax.enable_x64(True):
    x, w = _data()  # 1003 rows: not a multiple of 8
    key = jax.random.key(1)
    for init, cov, chunk in (("kmeans", "full", None), ("random", "diag", 32)):
      a = gmm.fit(key, x, 4, cov, init=init, n_init=2, sample_weight=w, tol=1e-6,
                  chunk_size=chunk)
      b = gmm.fit(key, x, 4, cov, init=init, n_init=2, sample_weight=w, tol=1e-6,
                  chunk_size=chunk, mesh=mesh)
      res[f"gmm_{init}_{cov}"] = _gmm_case(a, b)
    # Rows already on the mesh (padded by shard_rows with weight 0): gmm.fit detects them.
    xs, ws = sharding.shard_rows(x, mesh, w)
    a = gmm.fit(key, np.asarray(xs), 4, "tied", init="k-means++", sample_weight=np.asarray(ws))
    b = gmm.fit(key, xs, 4, "tied", init="k-means++", sample_weight=ws)
    res["gmm_presharded_tied"] = _gmm_case(a, b)
    # One E-step / EM step on sharded rows, eagerly (detected) and under jit (mesh=).
    ref = gmm.e_step(a.params, np.asarray(xs), np.asarray(ws))
    got = gmm.e_step(a.params, xs, ws)
    step = jax.jit(lambda p, x, w: gmm.em_step(p, x, w, mesh=mesh))
    p_ref, ll_ref = gmm.em_step(a.params, np.asarray(xs), np.asarray(ws))
    p_got, ll_got = step(a.params, xs, ws)
    res["e_step"] = max(max(_diff(u, v) for u, v in zip(ref, got)),
                        max(_diff(u, v) for u, v in zip(jax.tree.leaves(p_ref),
                                                        jax.tree.leaves(p_got))),
                        _diff(ll_ref, ll_got))
    # Streamed exact EM with every batch split over the devices.
    from lvmjax.gmm import streaming  # pylint: disable=g-import-not-at-top
    a = gmm.fit(key, x, 4, "diag", init="k-means++", tol=1e-6)
    b = streaming.fit(key, x, 4, "diag", init="k-means++", tol=1e-6, batch_size=300, mesh=mesh)
    res["gmm_streamed_sharded"] = _gmm_case(a, b)
    a = kmeans.fit(key, x, 5, n_init=2, sample_weight=w)
    b = kmeans.fit(key, x, 5, n_init=2, sample_weight=w, mesh=mesh, chunk_size=16)
    res["kmeans"] = _kmeans_case(a, b)
    # Empty clusters: a centroid far from all points is relocated (globally farthest point).
    init = np.concatenate([x[:1] + 100.0, x[1:5]])
    a = kmeans.fit(key, x, 5, init=init)
    b = kmeans.fit(key, x, 5, init=init, mesh=mesh)
    res["kmeans_relocation"] = _kmeans_case(a, b)
  with open(out, "w") as f:
    json.dump(res, f)


def run_process(pid, nproc, port, out_dir):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=2")
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lvmjax import distributed, gmm, kmeans, sharding  # pylint: disable=g-import-not-at-top
  assert distributed.maybe_initialize(f"localhost:{port}", nproc, pid)
  assert jax.process_count() == nproc and jax.device_count() == 2 * nproc
  mesh = sharding.data_mesh()
  res = {"process_count": jax.process_count(), "device_count": jax.device_count()}

  res["vae"] = _vae_case(mesh)
  with jax.enable_x64(True):
    x, w = _data()
    rows = sharding.process_rows(len(x))
    xg, wg = sharding.rows_from_processes(x[rows], mesh, w[rows])  # only this process's rows
    # The same global rows (with each process's padding) on one device, as the reference.
    parts, wparts = [], []
    per = xg.shape[0] // nproc
    for p in range(nproc):
      r = sharding.process_rows(len(x), p, nproc)
      pad = per - (r.stop - r.start)
      parts.append(np.concatenate([x[r], np.zeros((pad, 3))]))
      wparts.append(np.concatenate([w[r], np.zeros(pad)]))
    xh, wh = np.concatenate(parts), np.concatenate(wparts)
    key = jax.random.key(1)
    a = gmm.fit(key, xh, 4, "full", sample_weight=wh, tol=1e-6)  # init="kmeans"
    b = gmm.fit(key, xg, 4, "full", sample_weight=wg, tol=1e-6)
    res["gmm_kmeans_full"] = _gmm_case(a, b)
    a = kmeans.fit(key, xh, 5, sample_weight=wh)
    b = kmeans.fit(key, xg, 5, sample_weight=wg)
    res["kmeans"] = _kmeans_case(a, b)
  if distributed.is_primary():
    with open(os.path.join(out_dir, "result.json"), "w") as f:
      json.dump(res, f)


def main(argv):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if argv[1] == "devices":
    run_devices(argv[2])
  else:
    run_process(int(argv[2]), int(argv[3]), int(argv[4]), argv[5])


if __name__ == "__main__":
  main(sys.argv)
