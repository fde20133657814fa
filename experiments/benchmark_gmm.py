r"""EM and K-means speed, side by side in one process: lvmjax, scikit-learn, gmmx.

Same data, same initial parameters, float32, full covariance, a fixed number of EM iterations
(``tol=0``). Seconds per iteration are measured as the difference of two fits of T and 1
iterations divided by T - 1, each after a warm-up call, so set-up work (validation, the final
E-step scikit-learn runs, the data centring lvmjax does) and lvmjax's compile time cancel out.
Compile time is reported apart (first call minus second call). The run also measures the
machine's float32 matrix-product rate (2048³ with XLA and with NumPy's BLAS) and reports lvmjax's
achieved rate against it, with the floating-point operations of a full-covariance EM iteration
counted as 4·N·K·D² (the Mahalanobis products and the second moments) + 8·N·K·D (differences,
squares, weighting, sums) + 6·N·K (log-sum-exp and responsibilities).

Usage::

  python -m experiments.benchmark_gmm                         # the README's table (~10 min)
  python -m experiments.benchmark_gmm --sizes=4096x8x4 --kmeans_size=20000x8x8 --iters=3
                                      --sklearn_iters=3 --kmeans_iters=3 --small_fits=200
                                      --small_sklearn_fits=8   # seconds, a smoke run
  python -m experiments.benchmark_gmm --sizes= --kmeans_size= --small_fits=10000  # small fits only

Missing data (``--missing_size=NxDxK``, e.g. with ``--sizes= --kmeans_size=`` to run it alone):
ordinary EM on complete data against ``gmm.fit(..., missing="marginalize")`` on the same data with
``--missing_fraction`` (default 20%) of its entries removed completely at random, from the same
initial parameters, "full" and "diag".

gmmx (``pip install gmmx``) is run where it is installed and skipped with a note otherwise.

Thousands of small fits (``--small_fits``, default 10,000 mixtures of N=200, D=2, K=3): one
``jax.jit(jax.vmap(gmm.fit))`` call over all of them against a loop of scikit-learn fits, both
with scikit-learn's defaults, in interleaved rounds (a scikit-learn subsample, extrapolated), with
the time of the vmapped initialisation alone and the iteration counts (see `bench_small_fits`).

lvmjax is timed twice on a CPU: on one device (XLA threads only its large matrix products), and
data-parallel over one host device per core (``jax_num_cpu_devices``; the fit's ``mesh=``
argument): each device runs its block of rows on its own thread and one ``psum`` per iteration adds
the statistics. scikit-learn uses every core through OpenMP and its BLAS, and gmmx one device.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
import jax
import jax.numpy as jnp
import numpy as np

from lvmjax import gmm, kmeans, sharding

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["65536x16x32", "200000x16x32"], "EM sizes as NxDxK.")
flags.DEFINE_integer("iters", 10, "EM iterations timed for lvmjax and gmmx.")
flags.DEFINE_integer("sklearn_iters", 4, "EM iterations timed for scikit-learn (slow).")
flags.DEFINE_string("kmeans_size", "500000x32x64", "K-means size as NxDxK ('' to skip).")
flags.DEFINE_integer("kmeans_iters", 10, "Lloyd iterations timed.")
flags.DEFINE_integer("repeats", 2, "Timed repeats; the fastest is reported.")
flags.DEFINE_boolean("gmmx", True, "Also run gmmx where it is installed.")
flags.DEFINE_string("json_out", "", "Write the results as JSON here.")
flags.DEFINE_integer("seed", 0, "Data seed.")
flags.DEFINE_integer("small_fits", 10000, "Small mixtures (N=200, D=2, K=3) fitted in one "
                     "jax.jit(jax.vmap(gmm.fit)) call, against a loop of scikit-learn fits "
                     "(0 to skip).")
flags.DEFINE_integer("small_sklearn_fits", 200, "scikit-learn fits timed (spread over the "
                     "rounds) and extrapolated to --small_fits.")
flags.DEFINE_integer("small_rounds", 4, "Interleaved rounds: one lvmjax batch call, then "
                     "--small_sklearn_fits / rounds scikit-learn fits.")
flags.DEFINE_string("missing_size", "",
                    "Missing-data EM size as NxDxK ('' to skip): ordinary EM on complete data "
                    "against gmm.fit(missing='marginalize') on the same data with "
                    "--missing_fraction of the entries removed, full and diag covariances.")
flags.DEFINE_float("missing_fraction", 0.2, "Fraction of entries removed completely at random.")
flags.DEFINE_integer("missing_iters", 5, "EM iterations timed in the missing-data comparison.")
flags.DEFINE_integer("cpu_devices", 0,
                     "Host CPU devices JAX creates (jax_num_cpu_devices); 0: one per core. With "
                     "more than one device, lvmjax is also timed data-parallel over a mesh of "
                     "them (lvmjax.sharding.data_mesh()), which is how JAX spreads work that is "
                     "not one large matrix product over a CPU's cores. 1: one device only.")


def _parse(size: str) -> tuple[int, int, int]:
  n, d, k = (int(v) for v in size.lower().split("x"))
  return n, d, k


def make_data(n, d, k, seed):
  """A mixture of k anisotropic Gaussians in d dimensions, float32, with its initial params."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * 4
  z = rng.integers(k, size=n)
  a = rng.normal(size=(k, d, d)) * 0.4
  x = centers[z] + np.einsum("nd,nde->ne", rng.normal(size=(n, d)), a[z])
  x = x.astype(np.float32)
  idx = rng.choice(n, k, replace=False)
  cov = np.cov(x.T).astype(np.float32)
  init = dict(weights=np.full(k, 1.0 / k, np.float32), means=x[idx],
              covariances=np.broadcast_to(cov, (k, d, d)).copy())
  return x, init


def best_of(fn, repeats):
  times = []
  out = None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return min(times), out


def per_iteration(run, iters, repeats, fixed=None, iterations_run=None):
  """(seconds per iteration, compile seconds, result of the long run) from fits of iters and 1.

  With a ``fixed`` dict, also its ``"fixed_s"``: the seconds a call spends outside its
  iterations (the 1-iteration call less one iteration: checks, transfers, set-up, the result).
  ``iterations_run(result)`` gives the iterations a fit actually ran, for a library that stops
  early (gmmx stops at a non-finite log-likelihood): the time is divided by those, not by
  ``iters - 1``, and ``fixed["iterations_run"]`` records the long run's.
  """
  t0 = time.perf_counter()
  run(iters)
  first = time.perf_counter() - t0
  t_long, result = best_of(lambda: run(iters), repeats)
  t_short, short = best_of(lambda: run(1), repeats + 1)
  ran_long, ran_short = ((iters, 1) if iterations_run is None
                         else (iterations_run(result), iterations_run(short)))
  sec = (t_long - t_short) / max(ran_long - ran_short, 1)
  if fixed is not None:
    fixed.update(fixed_s=max(t_short - sec, 0.0), iterations_run=ran_long)
  return sec, max(first - t_long, 0.0), result


def matmul_rates(n=2048):
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
  f = jax.jit(lambda m: m @ m)
  f(a).block_until_ready()
  t, _ = best_of(lambda: f(a).block_until_ready(), 5)
  an = np.asarray(a)
  an @ an
  tn, _ = best_of(lambda: an @ an, 5)
  flops = 2.0 * n**3
  return flops / t / 1e9, flops / tn / 1e9


def em_flops(n, d, k):
  return 4.0 * n * k * d * d + 8.0 * n * k * d + 6.0 * n * k


def bench_em(n, d, k, rate_xla):
  """One EM size: lvmjax, scikit-learn and gmmx from the same initial parameters."""
  x, init = make_data(n, d, k, FLAGS.seed)
  row = {"N": n, "D": d, "K": k}
  p0 = gmm.GMMParams(jnp.asarray(init["weights"]), jnp.asarray(init["means"]),
                     jnp.asarray(init["covariances"]), "full")
  xj = _one_device(x)  # committed to device 0: the fit stays there

  def run_lvmjax(iters):
    r = gmm.fit(jax.random.key(0), xj, k, "full", init=p0, max_iter=iters, tol=0.0)
    return jax.block_until_ready(r)

  sec, comp, res = per_iteration(run_lvmjax, FLAGS.iters, FLAGS.repeats)
  row.update(lvmjax_s_per_iter=sec, lvmjax_compile_s=comp,
             lvmjax_gflops=em_flops(n, d, k) / sec / 1e9,
             lvmjax_ll=float(res.log_likelihood[-1]))
  row["lvmjax_fraction_of_matmul_peak"] = row["lvmjax_gflops"] / rate_xla

  def run_default(iters):  # as a user calls it: NumPy data, no mesh
    r = gmm.fit(jax.random.key(0), x, k, "full", init=p0, max_iter=iters, tol=0.0)
    return jax.block_until_ready(r)

  fixed = {}
  sec, comp, res_d = per_iteration(run_default, FLAGS.iters, FLAGS.repeats, fixed)
  row.update(default_s_per_iter=sec, default_compile_s=comp, default_fixed_s=fixed["fixed_s"],
             default_devices=_devices_of(x, k),
             default_gflops=em_flops(n, d, k) / sec / 1e9,
             default_ll_diff=abs(float(res_d.log_likelihood[-1]) - row["lvmjax_ll"]))
  mesh = _cpu_mesh()
  if mesh is not None:
    xs, ws = sharding.shard_rows(x, mesh)

    def run_mesh(iters):
      r = gmm.fit(jax.random.key(0), xs, k, "full", init=p0, max_iter=iters, tol=0.0,
                  sample_weight=ws)
      return jax.block_until_ready(r)

    sec, comp, res_m = per_iteration(run_mesh, FLAGS.iters, FLAGS.repeats)
    row.update(lvmjax_mesh_devices=int(mesh.devices.size), lvmjax_mesh_s_per_iter=sec,
               lvmjax_mesh_compile_s=comp, lvmjax_mesh_gflops=em_flops(n, d, k) / sec / 1e9,
               lvmjax_mesh_ll_diff=abs(float(res_m.log_likelihood[-1]) - row["lvmjax_ll"]))

  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=g-import-not-at-top
  from sklearn.mixture import GaussianMixture  # pylint: disable=g-import-not-at-top
  prec = np.linalg.inv(init["covariances"].astype(np.float64))

  def run_sklearn(iters):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", ConvergenceWarning)
      return GaussianMixture(k, covariance_type="full", weights_init=init["weights"],
                             means_init=init["means"], precisions_init=prec, max_iter=iters,
                             tol=0.0).fit(x)

  sk_iters = max(2, min(FLAGS.sklearn_iters, FLAGS.iters))
  fixed = {}
  sec, _, sk = per_iteration(run_sklearn, sk_iters, 1, fixed)
  row.update(sklearn_s_per_iter=sec, sklearn_ll=float(sk.lower_bounds_[-1]),
             sklearn_fixed_s=fixed["fixed_s"])
  # Same work: the log-likelihood after sk_iters iterations agrees between the two.
  check = gmm.fit(jax.random.key(0), xj, k, "full", init=p0, max_iter=sk_iters, tol=0.0)
  row["ll_diff_vs_sklearn"] = abs(float(check.log_likelihood[-1]) - row["sklearn_ll"])
  row["speedup_vs_sklearn"] = row["sklearn_s_per_iter"] / row["lvmjax_s_per_iter"]
  row["default_speedup_vs_sklearn"] = row["sklearn_s_per_iter"] / row["default_s_per_iter"]
  if "lvmjax_mesh_s_per_iter" in row:
    row["mesh_speedup_vs_sklearn"] = row["sklearn_s_per_iter"] / row["lvmjax_mesh_s_per_iter"]

  if FLAGS.gmmx:
    try:
      from gmmx import EMFitter, GaussianMixtureModelJax  # pylint: disable=g-import-not-at-top
    except ImportError:
      row["gmmx"] = "not installed: pip install gmmx"
    else:
      g0 = GaussianMixtureModelJax.from_squeezed(
          means=init["means"], covariances=init["covariances"], weights=init["weights"],
          covariance_type="full")

      def run_gmmx(iters):
        return jax.block_until_ready(EMFitter(max_iter=iters, tol=0.0, reg_covar=1e-6)
                                     .fit(xj, g0))

      ran = {}
      sec, comp, gres = per_iteration(run_gmmx, FLAGS.iters, FLAGS.repeats, ran,
                                      iterations_run=lambda r: int(r.n_iter))
      row.update(gmmx_s_per_iter=sec, gmmx_compile_s=comp,
                 gmmx_ll=float(gres.log_likelihood), gmmx_iterations_run=ran["iterations_run"])
      if not np.isfinite(row["gmmx_ll"]):  # a failed fit's time is no comparison: no ratio
        row["gmmx"] = f"log-likelihood NaN; stopped after {ran['iterations_run']} iterations"
      else:
        row.update(speedup_vs_gmmx=sec / row["lvmjax_s_per_iter"],
                   default_speedup_vs_gmmx=sec / row["default_s_per_iter"])
        if "lvmjax_mesh_s_per_iter" in row:
          row["mesh_speedup_vs_gmmx"] = sec / row["lvmjax_mesh_s_per_iter"]
  return row


def bench_kmeans(n, d, k):
  """Lloyd iterations from the same initial centroids: lvmjax against scikit-learn's KMeans."""
  x, init = make_data(n, d, k, FLAGS.seed + 1)
  c0 = init["means"]
  xj = _one_device(x)  # committed to device 0: the fit stays there
  row = {"N": n, "D": d, "K": k}

  def run_lvmjax(iters):
    return jax.block_until_ready(kmeans.fit(jax.random.key(0), xj, k, init=jnp.asarray(c0),
                                            max_iter=iters, tol=0.0))

  sec, comp, res = per_iteration(run_lvmjax, FLAGS.kmeans_iters, FLAGS.repeats)
  row.update(lvmjax_s_per_iter=sec, lvmjax_compile_s=comp, lvmjax_inertia=float(res.inertia),
             lvmjax_n_iter=int(res.n_iter))

  def run_default(iters):  # as a user calls it: NumPy data, no mesh
    return jax.block_until_ready(kmeans.fit(jax.random.key(0), x, k, init=c0, max_iter=iters,
                                            tol=0.0))

  fixed = {}
  sec, comp, res_d = per_iteration(run_default, FLAGS.kmeans_iters, FLAGS.repeats, fixed)
  row.update(default_s_per_iter=sec, default_compile_s=comp, default_fixed_s=fixed["fixed_s"],
             default_devices=_devices_of(x, k),
             default_algorithm=kmeans.resolve_algorithm("auto", k, n),
             default_inertia_rel_diff=abs(float(res_d.inertia) - row["lvmjax_inertia"])
             / row["lvmjax_inertia"])

  def run_default_lloyd(iters):  # the default call with every distance in every iteration
    return jax.block_until_ready(kmeans.fit(jax.random.key(0), x, k, init=c0, max_iter=iters,
                                            tol=0.0, algorithm="lloyd"))

  fixed = {}
  sec, comp, _ = per_iteration(run_default_lloyd, FLAGS.kmeans_iters, FLAGS.repeats, fixed)
  row.update(default_lloyd_s_per_iter=sec, default_lloyd_fixed_s=fixed["fixed_s"])
  mesh = _cpu_mesh()
  if mesh is not None:
    xs, ws = sharding.shard_rows(x, mesh)

    def run_mesh(iters):
      return jax.block_until_ready(kmeans.fit(jax.random.key(0), xs, k, init=jnp.asarray(c0),
                                              max_iter=iters, tol=0.0, sample_weight=ws))

    sec, comp, res_m = per_iteration(run_mesh, FLAGS.kmeans_iters, FLAGS.repeats)
    row.update(lvmjax_mesh_devices=int(mesh.devices.size), lvmjax_mesh_s_per_iter=sec,
               lvmjax_mesh_compile_s=comp,
               lvmjax_mesh_inertia_rel_diff=abs(float(res_m.inertia) - row["lvmjax_inertia"])
               / row["lvmjax_inertia"])
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top

  def run_sklearn(iters):
    return KMeans(k, init=c0, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(x)

  fixed = {}
  sec, _, sk = per_iteration(run_sklearn, FLAGS.kmeans_iters, FLAGS.repeats, fixed)
  row.update(sklearn_s_per_iter=sec, sklearn_inertia=float(sk.inertia_),
             sklearn_n_iter=int(sk.n_iter_), sklearn_fixed_s=fixed["fixed_s"])
  row["inertia_rel_diff"] = abs(row["lvmjax_inertia"] - row["sklearn_inertia"]) / row[
      "sklearn_inertia"]
  row["speedup_vs_sklearn"] = row["sklearn_s_per_iter"] / row["lvmjax_s_per_iter"]
  row["default_speedup_vs_sklearn"] = row["sklearn_s_per_iter"] / row["default_s_per_iter"]
  row["default_lloyd_speedup_vs_sklearn"] = (row["sklearn_s_per_iter"]
                                             / row["default_lloyd_s_per_iter"])
  if "lvmjax_mesh_s_per_iter" in row:
    row["mesh_speedup_vs_sklearn"] = row["sklearn_s_per_iter"] / row["lvmjax_mesh_s_per_iter"]
  row["whole_fit"] = _kmeans_whole_fits(x, c0, k)
  return row


def _kmeans_whole_fits(x, c0, k):
  """Whole calls as a user makes them, to convergence (default tol and max_iter) from the same
  initial centroids, interleaved round by round so that load hits all alike: the lvmjax default
  call, and scikit-learn's KMeans with its default algorithm "lloyd" and with "elkan" (which
  skips distances with bounds, as lvmjax's default "hamerly" does). Fixed costs per call (checks,
  transfers, centring, the final assignment and inertia) are included."""
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top
  runs = {
      "lvmjax": lambda: jax.block_until_ready(kmeans.fit(jax.random.key(0), x, k, init=c0)),
      "sklearn_lloyd": lambda: KMeans(k, init=c0, n_init=1, algorithm="lloyd").fit(x),
      "sklearn_elkan": lambda: KMeans(k, init=c0, n_init=1, algorithm="elkan").fit(x),
  }
  times = {name: [] for name in runs}
  n_iter, inertia = {}, {}
  for name, run in runs.items():  # warm-up (lvmjax: compiles)
    out = run()
    n_iter[name] = int(out.n_iter) if name == "lvmjax" else int(out.n_iter_)
    inertia[name] = float(out.inertia) if name == "lvmjax" else float(out.inertia_)
  for _ in range(max(FLAGS.repeats, 1) + 1):
    for name, run in runs.items():
      t0 = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - t0)
  out = {"n_iter": n_iter, "inertia": inertia, "load": os.getloadavg()[0]}
  for name, ts in times.items():
    out[f"{name}_s"] = float(np.median(ts))
    out[f"{name}_best_s"] = float(np.min(ts))
  out["speedup_vs_sklearn_lloyd"] = out["sklearn_lloyd_s"] / out["lvmjax_s"]
  out["speedup_vs_sklearn_elkan"] = out["sklearn_elkan_s"] / out["lvmjax_s"]
  return out


def bench_missing(n, d, k, fraction):
  """Seconds per EM iteration: complete data (ordinary EM) against the same data with
  ``fraction`` of the entries missing completely at random (marginalised EM), one device, from
  the same initial parameters; "full" and "diag"."""
  x, init = make_data(n, d, k, FLAGS.seed + 2)
  rng = np.random.default_rng(FLAGS.seed + 3)
  gone = rng.uniform(size=x.shape) < fraction
  gone[np.arange(n), rng.integers(0, d, n)] = False  # every row keeps an observed entry
  x_missing = _one_device(np.where(gone, np.nan, x))
  xj = _one_device(x)
  rows = []
  for cov_type in ("full", "diag"):
    cov = init["covariances"] if cov_type == "full" else np.ascontiguousarray(
        np.diagonal(init["covariances"], axis1=1, axis2=2))
    p0 = gmm.GMMParams(jnp.asarray(init["weights"]), jnp.asarray(init["means"]),
                       jnp.asarray(cov), cov_type)
    row = {"N": n, "D": d, "K": k, "covariance_type": cov_type, "missing_fraction": fraction,
           "missing_entries": int(gone.sum())}
    for name, data, missing in (("complete", xj, "error"), ("missing", x_missing, "marginalize")):
      def run(iters, data=data, missing=missing):
        r = gmm.fit(jax.random.key(0), data, k, cov_type, init=p0, max_iter=iters, tol=0.0,
                    missing=missing)
        return jax.block_until_ready(r)
      sec, comp, res = per_iteration(run, FLAGS.missing_iters, FLAGS.repeats)
      row.update({f"{name}_s_per_iter": sec, f"{name}_compile_s": comp,
                  f"{name}_ll": float(res.log_likelihood[-1])})
    row["slowdown"] = row["missing_s_per_iter"] / row["complete_s_per_iter"]
    rows.append(row)
    print(f"| {n:,} | {d} | {k} | {cov_type} | {100 * fraction:.0f}% | "
          f"{row['complete_s_per_iter']:.4f} | {row['missing_s_per_iter']:.4f} | "
          f"{row['slowdown']:.1f}x | {row['complete_compile_s']:.1f} / "
          f"{row['missing_compile_s']:.1f} |", flush=True)
  return rows


def small_mixtures(num, n=200, d=2, k=3, seed=0):
  """``num`` independent data sets of n points from k well-separated Gaussians in d dimensions."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num, k, d)) * 3
  z = rng.integers(0, k, (num, n))
  return (np.take_along_axis(centers, z[..., None], axis=1)
          + rng.normal(size=(num, n, d))).astype(np.float32)


def bench_small_fits(num, sklearn_fits, rounds, k=3):
  """Thousands of small fits: ``jax.jit(jax.vmap(gmm.fit))`` against a scikit-learn loop.

  Both with scikit-learn's defaults (full covariances, k-means initialisation, ``max_iter=100``,
  ``tol=1e-3``). The rounds interleave the two, so that the machine's load hits both alike: each
  round times one lvmjax call over all ``num`` mixtures, then ``sklearn_fits // rounds``
  scikit-learn fits (the next mixtures in order), whose time per fit is extrapolated to ``num``.
  Also timed once: the initialisation alone (``max_iter=0``: the vmapped K-means), to show where
  the batch's time goes, and the iteration counts (the EM and Lloyd loops hand a stopped
  member's lane to the next member, `lvmjax.fixed_point.refilling_while_loop`, so the batch
  costs about the mean count times the batch size, not the maximum).
  """
  from sklearn.mixture import GaussianMixture  # pylint: disable=g-import-not-at-top
  xs_host = small_mixtures(num, k=k, seed=FLAGS.seed + 4)
  xs = jax.device_put(xs_host)
  keys = jax.random.split(jax.random.key(0), num)
  fit = jax.jit(jax.vmap(lambda key, x: gmm.fit(key, x, k)))
  init_only = jax.jit(jax.vmap(lambda key, x: gmm.fit(key, x, k, max_iter=0)))
  start = time.perf_counter()
  res = jax.block_until_ready(fit(keys, xs))
  first = time.perf_counter() - start
  jax.block_until_ready(init_only(keys, xs))
  per_round = max(1, sklearn_fits // rounds)
  ours, theirs, sk_lb, load = [], [], [], [os.getloadavg()[0]]
  for r in range(rounds):
    start = time.perf_counter()
    res = jax.block_until_ready(fit(keys, xs))
    ours.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(r * per_round, (r + 1) * per_round):
      g = GaussianMixture(k, covariance_type="full", max_iter=100, tol=1e-3, random_state=i)
      sk_lb.append(g.fit(xs_host[i % num]).lower_bound_)
    theirs.append((time.perf_counter() - start) / per_round)
    load.append(os.getloadavg()[0])
  start = time.perf_counter()
  jax.block_until_ready(init_only(keys, xs))
  t_init = time.perf_counter() - start
  n_iter = np.asarray(res.n_iter)
  row = {"num_mixtures": num, "N": 200, "D": 2, "K": k, "rounds": rounds,
         "lvmjax_s": ours, "lvmjax_first_call_s": first,
         "lvmjax_ms_per_fit_best": 1e3 * min(ours) / num,
         "lvmjax_ms_per_fit_median": 1e3 * float(np.median(ours)) / num,
         "lvmjax_init_only_s": t_init,
         "sklearn_fits_timed": per_round * rounds, "sklearn_ms_per_fit": [1e3 * t for t in theirs],
         "sklearn_ms_per_fit_median": 1e3 * float(np.median(theirs)),
         "speedup_median": float(np.median(theirs)) * num / float(np.median(ours)),
         "speedup_by_round": [t * num / o for t, o in zip(theirs, ours)],
         "lvmjax_n_iter_mean": float(n_iter.mean()), "lvmjax_n_iter_max": int(n_iter.max()),
         "lvmjax_converged_fraction": float(np.mean(np.asarray(res.converged))),
         "lvmjax_mean_lower_bound_timed": float(np.mean(np.asarray(res.lower_bound)[
             [i % num for i in range(per_round * rounds)]])),
         "sklearn_mean_lower_bound": float(np.mean(sk_lb)), "load_average_1min": load}
  print(f"| {num:,} | {row['lvmjax_ms_per_fit_median']:.3f} (best "
        f"{row['lvmjax_ms_per_fit_best']:.3f}) | {first:.1f} | {t_init:.2f} | "
        f"{row['lvmjax_n_iter_mean']:.1f} / {row['lvmjax_n_iter_max']} | "
        f"{row['sklearn_ms_per_fit_median']:.2f} ({row['sklearn_fits_timed']} fits) | "
        f"{row['speedup_median']:.0f}x ({min(row['speedup_by_round']):.0f}-"
        f"{max(row['speedup_by_round']):.0f}x) | {row['lvmjax_mean_lower_bound_timed']:.4f} / "
        f"{row['sklearn_mean_lower_bound']:.4f} | {min(load):.1f}-{max(load):.1f} |", flush=True)
  return row


def _one_device(x):
  """x committed to JAX's first device: fits of it run there (no automatic mesh)."""
  return jax.device_put(x, jax.devices()[0])


def _devices_of(x, k) -> int:
  """The devices a default-call fit of x splits its rows over (its result comes back on one)."""
  auto = sharding.auto_placement(x, k)
  return 1 if auto is None else int(auto.mesh.devices.size)


def _cpu_mesh():
  """A data mesh over the host CPU devices when there are several (else None)."""
  if jax.default_backend() != "cpu" or jax.device_count() < 2:
    return None
  return sharding.data_mesh()


# --------------------------------------------------------------------------------------------
# Variational Bayesian GMM (lvmjax.gmm.bayesian) against scikit-learn's BayesianGaussianMixture.

flags.DEFINE_string("bayesian_size", "",
                    "Variational Bayesian GMM against scikit-learn's BayesianGaussianMixture at "
                    "this NxDxK (full, float32), e.g. 65536x16x32 ('' to skip).")
flags.DEFINE_integer("bayesian_iters", 5, "Iterations timed in the Bayesian GMM comparison.")


def bench_bayesian(n, d, k):
  """Seconds per variational iteration, lvmjax against scikit-learn, full covariance, float32,
  the same data and the same initial state: both start from the M-step of the responsibilities
  of the nearest initial mean (scikit-learn's ``_initialize(X, resp)``, then its loop as a warm
  start; lvmjax's ``bayesian.params_from_responsibilities``), Dirichlet-process prior, ``tol=0``."""
  from sklearn.mixture import BayesianGaussianMixture  # pylint: disable=g-import-not-at-top
  from lvmjax.gmm import bayesian  # pylint: disable=g-import-not-at-top
  x, init = make_data(n, d, k, FLAGS.seed + 4)
  dist = ((x[:, None, :] - init["means"][None]) ** 2).sum(-1)
  resp = np.eye(k, dtype=np.float32)[np.argmin(dist, axis=1)]
  xj = _one_device(x)
  family = bayesian.prior(xj, num_components=k, covariance_type="full")
  p0 = bayesian.params_from_responsibilities(family, xj, resp)

  def run_lvmjax(iters):
    r = bayesian.fit(jax.random.key(0), xj, k, "full", init=p0, max_iter=iters, tol=0.0)
    return jax.block_until_ready(r)

  def run_sklearn(iters):
    est = BayesianGaussianMixture(n_components=k, covariance_type="full", max_iter=iters, tol=0.0,
                                  warm_start=True)
    est._check_parameters(x)  # pylint: disable=protected-access
    est._initialize(x, resp)  # pylint: disable=protected-access
    est.converged_, est.lower_bound_ = False, -np.inf
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return est.fit(x)

  sec, comp, res = per_iteration(run_lvmjax, FLAGS.bayesian_iters, FLAGS.repeats)
  sk_sec, _, sk = per_iteration(run_sklearn, FLAGS.bayesian_iters, 1)
  ours = float(res.lower_bounds[-1]) * n
  theirs = float(np.ravel(sk.lower_bounds_)[-1])
  row = {"N": n, "D": d, "K": k, "lvmjax_s_per_iter": sec, "lvmjax_compile_s": comp,
         "sklearn_s_per_iter": sk_sec, "speedup_vs_sklearn": sk_sec / sec,
         "lower_bound_rel_diff": abs(ours - theirs) / abs(theirs), "load_1min": os.getloadavg()[0]}
  print(f"| {n:,} | {d} | {k} | {sec:.4f} | {comp:.1f} | {sk_sec:.4f} | "
        f"{row['speedup_vs_sklearn']:.1f}x | {row['lower_bound_rel_diff']:.1e} | "
        f"{row['load_1min']:.1f} |", flush=True)
  return row


def main(argv):
  del argv
  cores = os.cpu_count() or 1
  devices = FLAGS.cpu_devices or cores
  sharding.use_cpu_cores(devices)  # before the first computation creates the backend
  info = {"machine": f"{platform.processor() or platform.machine()}, {cores} cores",
          "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(dv) for dv in jax.devices()]}
  import sklearn  # pylint: disable=g-import-not-at-top
  info["sklearn"] = sklearn.__version__
  rate_xla, rate_np = matmul_rates()
  info.update(matmul_gflops_xla=rate_xla, matmul_gflops_numpy=rate_np)
  print(f"# {info['machine']}, backend {info['backend']}, jax {info['jax']}, "
        f"scikit-learn {info['sklearn']}")
  print(f"# float32 2048^3 matmul: XLA {rate_xla:.1f} GFLOP/s, NumPy {rate_np:.1f} GFLOP/s")
  rows = []
  print("\n## EM, full covariance, float32 (seconds per iteration; compile time apart)")
  print("| N | D | K | run | lvmjax s/it | compile s | scikit-learn s/it | gmmx s/it |"
        " vs sklearn | vs gmmx | lvmjax GFLOP/s (% of matmul) | |ΔLL| vs sklearn |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for size in FLAGS.sizes:
    row = bench_em(*_parse(size), rate_xla)
    rows.append(row)
    gm = (f"{row['gmmx_s_per_iter']:.4f}" if "gmmx_s_per_iter" in row else "n/a")
    if "gmmx" in row:  # why there is no gmmx ratio: not installed, or its fit failed
      gm += f" ({row['gmmx']})"
    vs_gm = (f"{row['speedup_vs_gmmx']:.1f}x" if "speedup_vs_gmmx" in row else "n/a")
    print(f"| {row['N']:,} | {row['D']} | {row['K']} | lvmjax, 1 device | "
          f"{row['lvmjax_s_per_iter']:.4f} | {row['lvmjax_compile_s']:.1f} | "
          f"{row['sklearn_s_per_iter']:.4f} | {gm} | {row['speedup_vs_sklearn']:.1f}x | {vs_gm} | "
          f"{row['lvmjax_gflops']:.1f} ({100 * row['lvmjax_fraction_of_matmul_peak']:.0f}%) | "
          f"{row['ll_diff_vs_sklearn']:.1e} |", flush=True)
    if "lvmjax_mesh_s_per_iter" in row:
      vs_gm = (f"{row['mesh_speedup_vs_gmmx']:.1f}x" if "mesh_speedup_vs_gmmx" in row else "n/a")
      print(f"| {row['N']:,} | {row['D']} | {row['K']} | lvmjax, mesh of "
            f"{row['lvmjax_mesh_devices']} CPU devices | {row['lvmjax_mesh_s_per_iter']:.4f} | "
            f"{row['lvmjax_mesh_compile_s']:.1f} | {row['sklearn_s_per_iter']:.4f} | {gm} | "
            f"{row['mesh_speedup_vs_sklearn']:.1f}x | {vs_gm} | {row['lvmjax_mesh_gflops']:.1f} "
            f"({100 * row['lvmjax_mesh_gflops'] / rate_xla:.0f}%) | "
            f"{row['ll_diff_vs_sklearn']:.1e} (mesh vs 1 device {row['lvmjax_mesh_ll_diff']:.1e})"
            " |", flush=True)
    vs_gm = (f"{row['default_speedup_vs_gmmx']:.1f}x" if "default_speedup_vs_gmmx" in row
             else "n/a")
    print(f"| {row['N']:,} | {row['D']} | {row['K']} | lvmjax, default call "
          f"(`gmm.fit(key, x, K)`, NumPy x: {row['default_devices']} device(s)) | "
          f"{row['default_s_per_iter']:.4f} | {row['default_compile_s']:.1f} | "
          f"{row['sklearn_s_per_iter']:.4f} | {gm} | {row['default_speedup_vs_sklearn']:.1f}x | "
          f"{vs_gm} | {row['default_gflops']:.1f} "
          f"({100 * row['default_gflops'] / rate_xla:.0f}%) | "
          f"{row['ll_diff_vs_sklearn']:.1e} (vs 1 device {row['default_ll_diff']:.1e}) |",
          flush=True)
  if rows:
    print("\nSeconds per call outside the iterations (checks, transfers, set-up): "
          + "; ".join(f"N={r['N']:,}: lvmjax default call {r['default_fixed_s']:.3f} s, "
                      f"scikit-learn {r['sklearn_fixed_s']:.3f} s" for r in rows))
  result = {"info": info, "em": rows}
  if FLAGS.kmeans_size:
    krow = bench_kmeans(*_parse(FLAGS.kmeans_size))
    result["kmeans"] = krow
    print("\n## K-means (Lloyd), float32, same initial centroids (seconds per iteration)")
    print("| N | D | K | run | lvmjax s/it | compile s | scikit-learn s/it | vs sklearn |"
          " inertia rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {krow['N']:,} | {krow['D']} | {krow['K']} | lvmjax, 1 device | "
          f"{krow['lvmjax_s_per_iter']:.4f} | {krow['lvmjax_compile_s']:.1f} | "
          f"{krow['sklearn_s_per_iter']:.4f} | {krow['speedup_vs_sklearn']:.2f}x | "
          f"{krow['inertia_rel_diff']:.1e} |")
    if "lvmjax_mesh_s_per_iter" in krow:
      print(f"| {krow['N']:,} | {krow['D']} | {krow['K']} | lvmjax, mesh of "
            f"{krow['lvmjax_mesh_devices']} CPU devices | {krow['lvmjax_mesh_s_per_iter']:.4f} | "
            f"{krow['lvmjax_mesh_compile_s']:.1f} | {krow['sklearn_s_per_iter']:.4f} | "
            f"{krow['mesh_speedup_vs_sklearn']:.2f}x | {krow['inertia_rel_diff']:.1e} (mesh vs "
            f"1 device {krow['lvmjax_mesh_inertia_rel_diff']:.1e}) |")
    print(f"| {krow['N']:,} | {krow['D']} | {krow['K']} | lvmjax, default call "
          f"(`kmeans.fit(key, x, K)`, NumPy x: {krow['default_devices']} device(s)) | "
          f"{krow['default_s_per_iter']:.4f} | {krow['default_compile_s']:.1f} | "
          f"{krow['sklearn_s_per_iter']:.4f} | {krow['default_speedup_vs_sklearn']:.2f}x | "
          f"{krow['inertia_rel_diff']:.1e} (vs 1 device {krow['default_inertia_rel_diff']:.1e}) |")
    print(f"| {krow['N']:,} | {krow['D']} | {krow['K']} | lvmjax, default call with "
          f"`algorithm=\"lloyd\"` (every distance; the default is "
          f"\"{krow['default_algorithm']}\") | {krow['default_lloyd_s_per_iter']:.4f} | | "
          f"{krow['sklearn_s_per_iter']:.4f} | {krow['default_lloyd_speedup_vs_sklearn']:.2f}x | |")
    print(f"\nSeconds per call outside the iterations: lvmjax default call "
          f"{krow['default_fixed_s']:.3f} s (\"lloyd\": {krow['default_lloyd_fixed_s']:.3f} s), "
          f"scikit-learn {krow['sklearn_fixed_s']:.3f} s")
    w = krow["whole_fit"]
    print(f"\nWhole fits to convergence from the same centroids (default tol and max_iter), "
          f"interleaved, median (best) of {FLAGS.repeats + 1} rounds, load {w['load']:.1f}: "
          f"lvmjax default call {w['lvmjax_s']:.3f} s ({w['lvmjax_best_s']:.3f}), "
          f"scikit-learn lloyd {w['sklearn_lloyd_s']:.3f} s ({w['sklearn_lloyd_best_s']:.3f}), "
          f"elkan {w['sklearn_elkan_s']:.3f} s ({w['sklearn_elkan_best_s']:.3f}): "
          f"**{w['speedup_vs_sklearn_lloyd']:.2f}x** scikit-learn's default, "
          f"{w['speedup_vs_sklearn_elkan']:.2f}x its elkan; n_iter {w['n_iter']}, "
          f"inertia {w['inertia']}")
  if FLAGS.missing_size:
    print("\n## Missing data: EM on complete data vs marginalised EM with entries missing "
          "(float32, one device, seconds per iteration)")
    print("| N | D | K | covariance | missing | complete-data EM s/it | missing-data EM s/it |"
          " ratio | compile s (complete / missing) |")
    print("|---|---|---|---|---|---|---|---|---|")
    result["missing"] = bench_missing(*_parse(FLAGS.missing_size), FLAGS.missing_fraction)
  if FLAGS.small_fits:
    print(f"\n## {FLAGS.small_fits:,} small mixtures (N=200, D=2, K=3, full, k-means init, "
          "max_iter=100, tol=1e-3): one jax.jit(jax.vmap(gmm.fit)) call against a scikit-learn "
          f"loop, {FLAGS.small_rounds} interleaved rounds")
    print("| mixtures | lvmjax ms/fit, median (best) | first call s | init alone s | EM iterations"
          " mean / max | scikit-learn ms/fit (timed) | speed-up, median (range over rounds) |"
          " mean lower bound lvmjax / sklearn | 1-min load |")
    print("|---|---|---|---|---|---|---|---|---|")
    result["small_fits"] = bench_small_fits(FLAGS.small_fits, FLAGS.small_sklearn_fits,
                                            FLAGS.small_rounds)
  if FLAGS.bayesian_size:
    print("\n## Variational Bayesian GMM (full, float32, Dirichlet process, same initial state;"
          " seconds per iteration)")
    print("| N | D | K | lvmjax s/it | compile s | scikit-learn s/it | vs sklearn |"
          " lower bound rel. diff | 1-min load |")
    print("|---|---|---|---|---|---|---|---|---|")
    result["bayesian"] = bench_bayesian(*_parse(FLAGS.bayesian_size))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
