r"""Scale benchmark: EM time and peak memory against N, 10,000 fits in one call, sharded fits.

Three parts, each number from a fresh subprocess so that peak memory is that of one run:

1. **EM against N** (D=16, K=32, full covariance, float32, the same initial parameters, ``tol=0``
   so every fit runs the iterations asked for). Sizes up to ``--memory_sizes`` are fitted in memory
   with ``gmm.fit``; ``--stream_sizes`` are streamed from a ``.npy`` memmap in ``--data_dir``
   (default /tmp) with ``lvmjax.gmm.streaming.fit`` in batches of ``--batch_size`` rows. Seconds
   per iteration = (time of a T-iteration fit - time of a 1-iteration fit) / (T - 1), after a
   warm-up call, so compile time and set-up cancel; compile time is reported apart (first call
   minus second). Peak memory is the subprocess's peak resident set (``ru_maxrss``), which
   includes the Python interpreter and JAX (~300-400 MB on CPU).
2. **10,000 small mixtures** (N=200, D=2, K=3, full, scikit-learn's defaults: k-means init,
   ``max_iter=100``, ``tol=1e-3``) in one ``jax.jit(jax.vmap(gmm.fit))`` call, against a loop of
   scikit-learn ``GaussianMixture`` fits. scikit-learn is timed on ``--sklearn_fits`` of them and
   extrapolated linearly to all (stated in the output).
3. **Sharded fit** on ``--devices`` simulated CPU devices
   (``--xla_force_host_platform_device_count``): ``gmm.fit(..., mesh=mesh)`` against the
   one-device fit from the same initial parameters; the largest parameter differences. (The
   simulated devices share the machine's cores, so this part checks results, not speed.)

Usage::

  python -m experiments.benchmark_scale                        # everything (~10 min on 2 cores)
  python -m experiments.benchmark_scale --memory_sizes=10000 --stream_sizes=20000 \
      --num_mixtures=200 --sklearn_fits=20 --shard_size=5000   # a smoke run, ~1-2 min

Results: a table on stdout and JSON in ``--json_out``. Measured with the first command on the
2-core CPU development machine (shared with other jobs, so times are noisy):

  ========  ======  ======  ===========  ========  ============
  N         mode    s/iter  µs/iter/row  data MiB  peak RSS MiB
  ========  ======  ======  ===========  ========  ============
  10^4      memory   0.011        1.11        0.6           470
  10^5      memory   0.185        1.85        6.1           475
  10^6      memory   1.66         1.66       61.0           575
  10^6      stream   2.01         2.01       61.0           493
  10^7      stream  18.4          1.84      610.4           518
  ========  ======  ======  ===========  ========  ============

  10,000 mixtures: 8.6 s in one call (+6.9 s compile) against 21.6 s for 200 scikit-learn fits,
  extrapolated to 1078 s for 10,000: 126x. Sharded fit on 8 simulated devices (N=2·10^5):
  largest |means difference| 9.5e-7 (float32), the same log-likelihood trajectory.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_list("memory_sizes", ["10000", "100000", "1000000"], "N fitted in memory.")
flags.DEFINE_list("stream_sizes", ["1000000", "10000000"], "N streamed from a memmap.")
flags.DEFINE_integer("dim", 16, "D.")
flags.DEFINE_integer("components", 32, "K.")
flags.DEFINE_integer("iters", 3, "EM iterations T of the timed fit (>= 2).")
flags.DEFINE_integer("batch_size", 65536, "Rows per streamed batch.")
flags.DEFINE_string("data_dir", "/tmp", "Where the memmap files are written (never the repo).")
flags.DEFINE_boolean("keep_data", False, "Keep the memmap files afterwards.")
flags.DEFINE_integer("num_mixtures", 10000, "Independent small mixtures fitted in one call.")
flags.DEFINE_integer("sklearn_fits", 200, "scikit-learn fits timed (then extrapolated).")
flags.DEFINE_integer("devices", 8, "Simulated CPU devices for the sharded fit (0 to skip).")
flags.DEFINE_integer("shard_size", 200000, "N of the sharded fit.")
flags.DEFINE_string("json_out", "/tmp/lvmjax_benchmark_scale.json", "JSON results.")
flags.DEFINE_integer("seed", 0, "Data seed.")
# Internal: what a child process measures.
flags.DEFINE_string("child", "", "Internal: em_memory | em_stream | many | sharded.")
flags.DEFINE_integer("n", 0, "Internal: N of a child.")
flags.DEFINE_string("path", "", "Internal: memmap path of a child.")


# --------------------------------------------------------------------------------------------
# Data.


def _centers(d, k, seed):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return np.random.default_rng([seed, 1]).normal(size=(k, d)).astype(np.float32) * 4


def _rows(rng, m, centers):
  import numpy as np  # pylint: disable=g-import-not-at-top
  z = rng.integers(0, centers.shape[0], m)
  return (centers[z] + rng.standard_normal((m, centers.shape[1]), dtype=np.float32))


def make_array(n, d, k, seed):
  """(n, d) float32 mixture data, generated in blocks into one array (no float64 copy)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  centers = _centers(d, k, seed)
  x = np.empty((n, d), np.float32)
  for i in range(0, n, 1 << 16):
    m = min(1 << 16, n - i)
    x[i:i + m] = _rows(rng, m, centers)
  return x


def write_npy(path, n, d, k, seed):
  """The same data as ``make_array`` written to a .npy file with plain writes (nothing mapped)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
  offset = mm.offset
  del mm
  rng = np.random.default_rng(seed)
  centers = _centers(d, k, seed)
  with open(path, "r+b") as f:
    f.seek(offset)
    for i in range(0, n, 1 << 16):
      f.write(_rows(rng, min(1 << 16, n - i), centers).tobytes())


def init_params(d, k, seed):
  """Initial parameters shared by all sizes: perturbed true means, identity covariances."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lvmjax import gmm  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng([seed, 2])
  means = _centers(d, k, seed) + rng.normal(size=(k, d)).astype(np.float32)
  return gmm.GMMParams(jnp.full((k,), 1.0 / k, jnp.float32), jnp.asarray(means),
                       jnp.broadcast_to(jnp.eye(d, dtype=jnp.float32), (k, d, d)), "full")


def _peak_rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _block(result):
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(result.params.means)
  return result


# --------------------------------------------------------------------------------------------
# Children.


def child_em_memory(n):
  import jax  # pylint: disable=g-import-not-at-top
  from lvmjax import gmm  # pylint: disable=g-import-not-at-top
  d, k, t_iters = FLAGS.dim, FLAGS.components, FLAGS.iters
  x = jax.numpy.asarray(make_array(n, d, k, FLAGS.seed))
  p0 = init_params(d, k, FLAGS.seed)
  run = lambda t: _block(gmm.fit(jax.random.key(0), x, k, "full", init=p0, max_iter=t, tol=0.0))  # pylint: disable=unnecessary-lambda-assignment
  times = {}
  for t in (1, 1, t_iters, t_iters):  # max_iter is static: each value compiles once
    start = time.perf_counter()
    r = run(t)
    times.setdefault(t, []).append(time.perf_counter() - start)
  per_iter = (times[t_iters][1] - times[1][1]) / (t_iters - 1)
  return {"n": n, "mode": "memory", "seconds_per_iter": per_iter,
          "compile_seconds": times[1][0] - times[1][1], "peak_rss_mib": _peak_rss_mib(),
          "data_mib": n * d * 4 / 2**20, "final_log_likelihood": float(r.lower_bound)}


def child_em_stream(n, path):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lvmjax.gmm import streaming  # pylint: disable=g-import-not-at-top
  d, k, t_iters = FLAGS.dim, FLAGS.components, FLAGS.iters
  p0 = init_params(d, k, FLAGS.seed)
  mm = np.load(path, mmap_mode="r")
  first = np.array(mm[:FLAGS.batch_size])
  start = time.perf_counter()  # compile: one batch, first call minus second call
  jax.block_until_ready(streaming.streamed_stats(p0, first, batch_size=FLAGS.batch_size))
  t_first = time.perf_counter() - start
  start = time.perf_counter()
  jax.block_until_ready(streaming.streamed_stats(p0, first, batch_size=FLAGS.batch_size))
  compile_s = t_first - (time.perf_counter() - start)
  del first
  times = {}
  for t in (1, 1, t_iters):  # the first fit compiles the M-step and warms the page cache
    start = time.perf_counter()
    r = streaming.fit(jax.random.key(0), mm, k, "full", init=p0, max_iter=t, tol=0.0,
                      batch_size=FLAGS.batch_size)
    jax.block_until_ready(r.params.means)
    times[t] = time.perf_counter() - start
  return {"n": n, "mode": "stream", "seconds_per_iter": (times[t_iters] - times[1]) / (t_iters - 1),
          "compile_seconds": compile_s, "peak_rss_mib": _peak_rss_mib(),
          "data_mib": n * d * 4 / 2**20, "final_log_likelihood": float(r.lower_bound)}


def child_many():
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sklearn.mixture import GaussianMixture  # pylint: disable=g-import-not-at-top
  from lvmjax import gmm  # pylint: disable=g-import-not-at-top
  b, n, d, k = FLAGS.num_mixtures, 200, 2, 3
  rng = np.random.default_rng(FLAGS.seed)
  centers = rng.normal(size=(b, k, d)) * 3
  z = rng.integers(0, k, (b, n))
  xs = (np.take_along_axis(centers, z[..., None], axis=1)
        + rng.normal(size=(b, n, d))).astype(np.float32)
  keys = jax.random.split(jax.random.key(0), b)
  fit = jax.jit(jax.vmap(lambda key, x: gmm.fit(key, x, k)))
  start = time.perf_counter()
  r = _block(fit(keys, xs))
  t_first = time.perf_counter() - start
  start = time.perf_counter()
  r = _block(fit(keys, xs))
  t_batch = time.perf_counter() - start
  m = min(FLAGS.sklearn_fits, b)
  start = time.perf_counter()
  sk_ll = []
  for i in range(m):
    g = GaussianMixture(k, covariance_type="full", max_iter=100, tol=1e-3, random_state=i)
    g.fit(xs[i])
    sk_ll.append(g.lower_bound_)
  t_sk = time.perf_counter() - start
  t_sk_all = t_sk / m * b
  return {"num_mixtures": b, "n": n, "d": d, "k": k, "lvmjax_seconds": t_batch,
          "lvmjax_compile_seconds": t_first - t_batch, "sklearn_fits_timed": m,
          "sklearn_seconds_timed": t_sk, "sklearn_seconds_extrapolated": t_sk_all,
          "speedup": t_sk_all / t_batch,
          "lvmjax_mean_lower_bound_first_m": float(np.mean(np.asarray(r.lower_bound)[:m])),
          "sklearn_mean_lower_bound_first_m": float(np.mean(sk_ll)),
          "lvmjax_converged_fraction": float(np.mean(np.asarray(r.converged))),
          "lvmjax_mean_n_iter": float(np.mean(np.asarray(r.n_iter)))}


def child_sharded():
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lvmjax import gmm, sharding  # pylint: disable=g-import-not-at-top
  d, k, n = FLAGS.dim, FLAGS.components, FLAGS.shard_size
  x = make_array(n, d, k, FLAGS.seed)
  p0 = init_params(d, k, FLAGS.seed)
  mesh = sharding.data_mesh()
  out = {"devices": jax.device_count(), "n": n}
  for name, kwargs in (("single", {}), ("sharded", {"mesh": mesh})):
    times = []
    for _ in range(2):
      start = time.perf_counter()
      r = _block(gmm.fit(jax.random.key(0), x, k, "full", init=p0, max_iter=5, tol=0.0,
                         **kwargs))
      times.append(time.perf_counter() - start)
    out[name] = r
    out[f"{name}_seconds_5_iters"] = times[1]
    out[f"{name}_compile_seconds"] = times[0] - times[1]
  a, b = out.pop("single"), out.pop("sharded")
  out["max_abs_diff_means"] = float(np.max(np.abs(a.params.means - b.params.means)))
  out["max_rel_diff_covariances"] = float(np.max(np.abs(a.params.covariances - b.params.covariances))
                                          / np.max(np.abs(a.params.covariances)))
  out["max_abs_diff_weights"] = float(np.max(np.abs(a.params.weights - b.params.weights)))
  out["log_likelihood_single"] = [float(v) for v in np.asarray(a.log_likelihood)]
  out["log_likelihood_sharded"] = [float(v) for v in np.asarray(b.log_likelihood)]
  return out


# --------------------------------------------------------------------------------------------
# Parent.


def _run_child(args, env_extra=None):
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.update(env_extra or {})
  passthrough = [f"--dim={FLAGS.dim}", f"--components={FLAGS.components}",
                 f"--iters={FLAGS.iters}", f"--batch_size={FLAGS.batch_size}",
                 f"--num_mixtures={FLAGS.num_mixtures}", f"--sklearn_fits={FLAGS.sklearn_fits}",
                 f"--shard_size={FLAGS.shard_size}", f"--seed={FLAGS.seed}"]
  proc = subprocess.run([sys.executable, "-m", "experiments.benchmark_scale"] + passthrough + args,
                        cwd=REPO, env=env, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"child {args} failed:\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if FLAGS.child:
    out = {"em_memory": lambda: child_em_memory(FLAGS.n),
           "em_stream": lambda: child_em_stream(FLAGS.n, FLAGS.path),
           "many": child_many, "sharded": child_sharded}[FLAGS.child]()
    print(json.dumps(out))
    return
  import jax  # pylint: disable=g-import-not-at-top
  results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                         "jax": jax.__version__, "backend": jax.default_backend()},
             "config": {"dim": FLAGS.dim, "components": FLAGS.components, "iters": FLAGS.iters,
                        "batch_size": FLAGS.batch_size, "dtype": "float32",
                        "covariance_type": "full"},
             "em": []}
  d, k = FLAGS.dim, FLAGS.components
  print(f"EM against N (D={d}, K={k}, full, float32; {FLAGS.iters}-iteration fits, tol=0)")
  print(f"{'N':>10} {'mode':>7} {'s/iter':>9} {'us/iter/row':>12} {'compile s':>10} "
        f"{'data MiB':>9} {'peak RSS MiB':>13}")
  jobs = [(int(n), "memory") for n in FLAGS.memory_sizes if n] + [
      (int(n), "stream") for n in FLAGS.stream_sizes if n]
  for n, mode in jobs:
    if mode == "memory":
      r = _run_child(["--child=em_memory", f"--n={n}"])
    else:
      path = os.path.join(FLAGS.data_dir, f"lvmjax_bench_scale_{n}x{d}.npy")
      if not os.path.exists(path):
        write_npy(path, n, d, k, FLAGS.seed)
      try:
        r = _run_child(["--child=em_stream", f"--n={n}", f"--path={path}"])
      finally:
        if not FLAGS.keep_data:
          os.remove(path)
    results["em"].append(r)
    print(f"{n:>10} {mode:>7} {r['seconds_per_iter']:>9.3f} "
          f"{r['seconds_per_iter'] / n * 1e6:>12.3f} {r['compile_seconds']:>10.2f} "
          f"{r['data_mib']:>9.1f} {r['peak_rss_mib']:>13.0f}", flush=True)

  if FLAGS.num_mixtures:
    r = _run_child(["--child=many"])
    results["many"] = r
    print(f"\n{r['num_mixtures']} mixtures (N={r['n']}, D={r['d']}, K={r['k']}, full, k-means "
          "init, max_iter=100, tol=1e-3)")
    print(f"  lvmjax, one jit(vmap(gmm.fit)) call: {r['lvmjax_seconds']:.2f} s "
          f"(+ {r['lvmjax_compile_seconds']:.1f} s compile, once)")
    print(f"  scikit-learn GaussianMixture loop: {r['sklearn_seconds_timed']:.2f} s for "
          f"{r['sklearn_fits_timed']} fits, extrapolated to {r['num_mixtures']}: "
          f"{r['sklearn_seconds_extrapolated']:.1f} s")
    print(f"  speed-up: {r['speedup']:.0f}x   (mean final log-likelihood of the first "
          f"{r['sklearn_fits_timed']}: lvmjax {r['lvmjax_mean_lower_bound_first_m']:.4f}, "
          f"scikit-learn {r['sklearn_mean_lower_bound_first_m']:.4f})")

  if FLAGS.devices:
    flags_env = (os.environ.get("XLA_FLAGS", "")
                 + f" --xla_force_host_platform_device_count={FLAGS.devices}")
    r = _run_child(["--child=sharded"], {"XLA_FLAGS": flags_env, "JAX_PLATFORMS": "cpu"})
    results["sharded"] = r
    print(f"\nSharded fit on {r['devices']} simulated CPU devices (N={r['n']}, 5 iterations, "
          "float32) against one device:")
    print(f"  max |means diff| {r['max_abs_diff_means']:.2e}, max rel. covariance diff "
          f"{r['max_rel_diff_covariances']:.2e}, max |weights diff| "
          f"{r['max_abs_diff_weights']:.2e}")
    print(f"  log-likelihood per iteration: one device {r['log_likelihood_single']}")
    print(f"                                sharded    {r['log_likelihood_sharded']}")
    print(f"  time for 5 iterations: one device {r['single_seconds_5_iters']:.2f} s, sharded "
          f"{r['sharded_seconds_5_iters']:.2f} s (simulated devices share the same cores)")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(results, f, indent=2)
    print(f"\nJSON: {FLAGS.json_out}")


if __name__ == "__main__":
  app.run(main)
