"""Subprocess body of tests/test_cpu_mesh.py: fits on a mesh of several CPU devices of a process.

Not a test module: each run needs its own JAX start-up (the device count is fixed when JAX
creates its CPU backend), and a fit that deadlocks must be killable from outside.

``python -m tests.cpu_mesh_worker devices NUM_DEVICES OUT CASE...`` runs each CASE in float64 on
one device and on a mesh of NUM_DEVICES CPU devices of this process (``sharding.use_cpu_cores``)
and writes OUT (JSON):

* ``gmm:COV:D:K:N_INIT``: ``gmm.fit`` (scikit-learn's ``init="kmeans"``, 6 EM iterations, so
  every iteration runs the Cholesky factorisations, triangular solves and M-step);
* ``estep:D:K``: ``gmm.e_step`` with ``mesh=``;
* ``grad:D:K``: the gradient of ``sum(gmm.log_marginal)`` in a ``shard_map`` of one's own;
* ``kmeans``: ``kmeans.fit`` with ``mesh=``; ``vae``: five data-parallel VAE training steps.

``python -m tests.cpu_mesh_worker process PID NPROC PORT OUT``: one of NPROC processes (2 CPU
devices each) joined by ``jax.distributed``; a full-covariance fit at D = 64 of rows held by the
processes against the one-device fit of the same rows; process 0 writes OUT.

Figures: maximum absolute differences of the parameters and the final lower bound, the
iteration counts, and each case's wall time.
"""
import json
import os
import sys
import time

NUM_ROWS = 600  # a multiple of 2 and 4 devices; 150 rows per component for K = 4


def _diff(a, b):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _tree_diff(a, b):
  import jax  # pylint: disable=g-import-not-at-top
  return max(_diff(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _mixture_data(d, k, n=NUM_ROWS, seed=0):
  """n rows of k well-separated Gaussian clusters in d dimensions with correlated noise."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(k, d)) * 4.0
  mix = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
  return means[rng.integers(0, k, n)] + rng.normal(size=(n, d)) @ mix


def _gmm_case(a, b):
  return {"params": _tree_diff(a.params, b.params),
          "lower_bound": _diff(a.lower_bound, b.lower_bound),
          "n_iter": [int(a.n_iter), int(b.n_iter)]}


def _run_case(case, mesh):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from lvmjax import gmm, kmeans  # pylint: disable=g-import-not-at-top
  kind, *args = case.split(":")
  key = jax.random.key(1)
  if kind == "gmm":
    cov, d, k, n_init = args[0], int(args[1]), int(args[2]), int(args[3])
    x = _mixture_data(d, k)
    fit = lambda **kw: gmm.fit(key, x, k, cov, n_init=n_init, max_iter=6, tol=0.0, **kw)  # pylint: disable=unnecessary-lambda-assignment
    return _gmm_case(fit(), fit(mesh=mesh))
  if kind in ("estep", "grad"):
    d, k = int(args[0]), int(args[1])
    x = _mixture_data(d, k)
    params = gmm.fit(key, x, k, max_iter=2).params
    if kind == "estep":
      return {"stats": _tree_diff(gmm.e_step(params, x), gmm.e_step(params, x, mesh=mesh))}
    total = lambda p, rows: jnp.sum(gmm.log_marginal(p, rows))  # pylint: disable=unnecessary-lambda-assignment
    local = lambda p, rows: jax.lax.psum(jax.grad(total)(p, rows), "data")  # pylint: disable=unnecessary-lambda-assignment
    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")), out_specs=P(),
                                    check_vma=False))
    return {"grad": _tree_diff(jax.grad(total)(params, x), sharded(params, x))}
  if kind == "kmeans":
    x = _mixture_data(8, 5)
    a, b = kmeans.fit(key, x, 5, n_init=2), kmeans.fit(key, x, 5, n_init=2, mesh=mesh)
    return {"centroids": _diff(a.centroids, b.centroids),
            "labels_equal": bool(np.array_equal(np.asarray(a.labels), np.asarray(b.labels))),
            "n_iter": [int(a.n_iter), int(b.n_iter)]}
  if kind == "vae":
    from tests import scale_worker  # pylint: disable=g-import-not-at-top
    return scale_worker._vae_case(mesh)  # pylint: disable=protected-access
  raise ValueError(f"unknown case {case!r}")


def run_devices(num_devices, out, cases):
  import jax  # pylint: disable=g-import-not-at-top
  from lvmjax import sharding  # pylint: disable=g-import-not-at-top
  sharding.use_cpu_cores(num_devices)  # as the README tells users to
  jax.config.update("jax_enable_x64", True)
  assert jax.local_device_count() == num_devices, jax.devices()
  mesh = sharding.data_mesh()
  res = {"num_devices": jax.device_count()}
  for case in cases:
    start = time.perf_counter()
    res[case] = _run_case(case, mesh)
    res[case]["seconds"] = round(time.perf_counter() - start, 1)
    print(case, res[case], flush=True)
  with open(out, "w") as f:
    json.dump(res, f)


def run_process(pid, nproc, port, out):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=2")
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_enable_x64", True)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lvmjax import distributed, gmm, sharding  # pylint: disable=g-import-not-at-top
  assert distributed.maybe_initialize(f"localhost:{port}", nproc, pid)
  assert jax.process_count() == nproc and jax.local_device_count() == 2
  mesh = sharding.data_mesh()
  d, k = 64, 4
  x = _mixture_data(d, k)
  start = time.perf_counter()
  xg, wg = sharding.rows_from_processes(x[sharding.process_rows(len(x))], mesh)
  # The same global rows, padding included, on one device: the reference.
  per = xg.shape[0] // nproc
  parts, weights = [], []
  for p in range(nproc):
    rows = x[sharding.process_rows(len(x), p, nproc)]
    pad = per - len(rows)
    parts.append(np.concatenate([rows, np.zeros((pad, d))]))
    weights.append(np.concatenate([np.ones(len(rows)), np.zeros(pad)]))
  fit = lambda xs, ws: gmm.fit(jax.random.key(1), xs, k, "full", n_init=2, max_iter=6, tol=0.0,  # pylint: disable=unnecessary-lambda-assignment
                               sample_weight=ws)
  res = _gmm_case(fit(np.concatenate(parts), np.concatenate(weights)), fit(xg, wg))
  res.update(process_count=jax.process_count(), device_count=jax.device_count(),
             seconds=round(time.perf_counter() - start, 1))
  if distributed.is_primary():
    with open(out, "w") as f:
      json.dump(res, f)


def main(argv):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if argv[1] == "devices":
    run_devices(int(argv[2]), argv[3], argv[4:])
  else:
    run_process(int(argv[2]), int(argv[3]), int(argv[4]), argv[5])


if __name__ == "__main__":
  main(sys.argv)
