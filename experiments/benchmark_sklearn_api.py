r"""The one-import swap: lvmjax.sklearn.GaussianMixture against sklearn.mixture.GaussianMixture.

Both estimators get the same float32 data and the same initial parameters (``weights_init``,
``means_init``, ``precisions_init``, so no K-means initialisation is timed), ``tol=0`` and
``max_iter=T``, so each ``fit`` runs exactly T EM iterations. lvmjax is fitted once first with
the same shapes, so its compile time is excluded (and reported apart); then each ``fit`` call is
timed end to end, as a user sees it (input validation, transfers, the fit, attributes back in
NumPy). scikit-learn's ``fit`` also runs one final E-step (for ``fit_predict``); lvmjax's does not
need one. The fits are checked to agree (mean log-likelihood) before the times are reported.

The machine may be shared: each side is timed ``--repeats`` times and the fastest and the median
are reported.

A second measurement (``--first_fit``) is the first fit a user sees: in a fresh Python process,
``GaussianMixture(n_components=K, covariance_type="full", random_state=0).fit(X)`` on
scikit-learn's 8x8 digits (``load_digits``, 1797 x 64, float64), its import and its fit timed
apart. lvmjax runs with JAX's persistent compilation cache (``lvmjax.compile_cache``) cold (a new,
empty cache directory) and warm (the same directory again), scikit-learn in the same rounds,
interleaved (cold, warm, scikit-learn, for each K, ``--first_fit_repeats`` rounds), so that the
machine's load hits all three alike. Each child also reports the programs it compiled or loaded
(JAX's ``backend_compile_duration`` events, which a cache hit also records) and its cache hits. The machine's load (``os.getloadavg``)
is printed with the figures, and the CPU time (``time.process_time``, all threads) of the import
and of the fit beside their wall-clock times: on a loaded machine the wall-clock times grow with
the load, the CPU times much less.

A third (``--main_job``) is the README's main command, ``python -m experiments.fit_gmm``, run in
a fresh process with the compilation cache cold and then warm: its wall time and its peak
resident set (the child's own ``ru_maxrss``, from ``os.wait4``; the target is 600 MB).

A fourth (``--readme_gmm``) is the README's "A GMM in ten lines", read from README.md and run as
it stands in a fresh process (lvmjax's building blocks and ``gmm.fit``, no compilation cache, as
a library user gets them): the time of the ten lines (``import jax`` apart), and the programs
compiled and the seconds spent compiling them.

Usage::

  python -m experiments.benchmark_sklearn_api               # N=65536, D=16, K=32, full, 10 iters
  python -m experiments.benchmark_sklearn_api --n=4096 --iters=3 --repeats=1   # a smoke run
  python -m experiments.benchmark_sklearn_api --nosteady --first_fit   # first fits on digits only
  python -m experiments.benchmark_sklearn_api --nosteady --nofirst_fit --main_job   # main job only
  python -m experiments.benchmark_sklearn_api --nosteady --nofirst_fit --readme_gmm  # ten lines only
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
import jax
import numpy as np
import sklearn
from sklearn import mixture as sk_mixture
from sklearn.exceptions import ConvergenceWarning

from lvmjax.sklearn import GaussianMixture

FLAGS = flags.FLAGS
flags.DEFINE_integer("n", 65536, "Number of points N.")
flags.DEFINE_integer("d", 16, "Number of features D.")
flags.DEFINE_integer("k", 32, "Number of components K.")
flags.DEFINE_enum("covariance_type", "full", ["full", "tied", "diag", "spherical"],
                  "Covariance type.")
flags.DEFINE_integer("iters", 10, "EM iterations per fit (tol=0).")
flags.DEFINE_integer("repeats", 3, "Timed fits per library.")
flags.DEFINE_integer("seed", 0, "Data seed.")
flags.DEFINE_string("json_out", "", "Write the results as JSON here.")
flags.DEFINE_boolean("steady", True, "Time fits after compilation (the N x D x K problem).")
flags.DEFINE_boolean("first_fit", True, "Time the first fit on the digits in fresh processes "
                     "(lvmjax with a cold and a warm compilation cache, and scikit-learn).")
flags.DEFINE_list("first_fit_components", ["10", "32"], "K of the first fits on the digits.")
flags.DEFINE_integer("first_fit_repeats", 2, "Rounds of (cold, warm, scikit-learn) per K.")
flags.DEFINE_boolean("main_job", False, "Measure the main job (experiments.fit_gmm on the digits) "
                     "in fresh processes, cold and warm cache: wall time and peak memory.")
flags.DEFINE_integer("main_job_repeats", 1, "Rounds of (cold, warm) main jobs.")
flags.DEFINE_boolean("readme_gmm", False, "Time the README's ten-line GMM in fresh processes.")
flags.DEFINE_integer("readme_gmm_repeats", 2, "Fresh processes running the README's ten lines.")

# The child process of one first fit: prints one JSON line (import and fit seconds, compilations).
_FIRST_FIT_CHILD = r"""
import json, sys, time
start, cpu_start = time.perf_counter(), time.process_time()
import jax.monitoring
events = {"compiles": 0, "compile_s": 0.0, "hits": 0}
def _duration(name, secs, **kw):
  if name.endswith("backend_compile_duration"):
    events["compiles"] += 1
    events["compile_s"] += secs
def _event(name, **kw):
  if name.endswith("compilation_cache/cache_hits"):
    events["hits"] += 1
jax.monitoring.register_event_duration_secs_listener(_duration)
jax.monitoring.register_event_listener(_event)
if sys.argv[1] == "lvmjax":
  from lvmjax.sklearn import GaussianMixture
else:
  from sklearn.mixture import GaussianMixture
from sklearn.datasets import load_digits
imported, cpu_imported = time.perf_counter(), time.process_time()
x = load_digits().data
begin, cpu_begin = time.perf_counter(), time.process_time()
gm = GaussianMixture(n_components=int(sys.argv[2]), covariance_type="full", random_state=0).fit(x)
end, cpu_end = time.perf_counter(), time.process_time()
print(json.dumps(dict(import_s=imported - start, fit_s=end - begin,
                      import_cpu_s=cpu_imported - cpu_start, fit_cpu_s=cpu_end - cpu_begin,
                      n_iter=int(gm.n_iter_),
                      lower_bound=float(gm.lower_bound_), **events)))
"""


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_env(cache_dir: str | None) -> dict:
  """The environment of a fresh child process: the repository importable, lvmjax's own
  compilation cache in ``cache_dir`` (None: the user's), no user setting that overrides it."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [_REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.pop("LVMJAX_NO_COMPILE_CACHE", None)
  if cache_dir is not None:
    env["XDG_CACHE_HOME"] = cache_dir  # lvmjax.compile_cache's default: $XDG_CACHE_HOME/lvmjax/jax
  return env


def first_fit(lib: str, k: int, cache_dir: str | None) -> dict:
  """One first fit on the digits in a fresh process (see the module docstring)."""
  env = _child_env(cache_dir)
  start = time.perf_counter()
  out = subprocess.run([sys.executable, "-c", _FIRST_FIT_CHILD, lib, str(k)], env=env,
                       capture_output=True, text=True, timeout=1800, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  result["process_s"] = time.perf_counter() - start
  return result


def bench_first_fits(components, repeats) -> dict:
  """Cold cache, warm cache and scikit-learn, interleaved; the fastest of each is reported."""
  runs = {f"{name}_k{k}": [] for k in components for name in ("cold", "warm", "sklearn")}
  load = [os.getloadavg()[0]]
  for _ in range(repeats):
    for k in components:
      with tempfile.TemporaryDirectory() as cache:
        runs[f"cold_k{k}"].append(first_fit("lvmjax", k, cache))
        runs[f"warm_k{k}"].append(first_fit("lvmjax", k, cache))
      runs[f"sklearn_k{k}"].append(first_fit("sklearn", k, None))
      load.append(os.getloadavg()[0])
  summary = {}
  for name, rs in runs.items():
    summary[name] = dict(fit_s=min(r["fit_s"] for r in rs),
                         import_s=min(r["import_s"] for r in rs),
                         fit_cpu_s=min(r["fit_cpu_s"] for r in rs),
                         import_cpu_s=min(r["import_cpu_s"] for r in rs),
                         programs=rs[-1]["compiles"], compile_s=rs[-1]["compile_s"],
                         compiled=rs[-1]["compiles"] - rs[-1]["hits"],
                         cache_hits=rs[-1]["hits"], n_iter=rs[-1]["n_iter"], all=rs)
  summary["load_average_1min"] = load
  print(f"First fit on the digits (1797 x 64 float64, full), fresh process, best of {repeats} "
        f"interleaved rounds; 1-min load average during the runs: "
        f"{min(load):.1f}-{max(load):.1f}")
  for k in components:
    for name, what in (("cold", "lvmjax, cold cache"), ("warm", "lvmjax, warm cache"),
                       ("sklearn", "scikit-learn")):
      r = summary[f"{name}_k{k}"]
      print(f"  K={k:3d} {what:20s} import {r['import_s']:5.2f} s ({r['import_cpu_s']:5.2f} s "
            f"CPU)  fit {r['fit_s']:6.2f} s ({r['fit_cpu_s']:6.2f} s CPU)  "
            f"({r['programs']} programs: {r['compiled']} compiled, {r['cache_hits']} from the "
            f"cache, {r['compile_s']:.1f} s; {r['n_iter']} EM iterations)")
  return summary


def main_job(cache_dir: str) -> dict:
  """``python -m experiments.fit_gmm`` in a fresh process: wall seconds and its peak memory."""
  with tempfile.TemporaryDirectory() as workdir, tempfile.TemporaryFile("w+") as log:
    start = time.perf_counter()
    child = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", "experiments.fit_gmm", "--workdir", workdir, "--quiet"],
        cwd=_REPO, env=_child_env(cache_dir), stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(child.pid, 0)  # the child's own peak, not the largest child's
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen.wait
    seconds = time.perf_counter() - start
    if child.returncode != 0:
      log.seek(0)
      raise RuntimeError(f"experiments.fit_gmm failed ({child.returncode}):\n{log.read()[-3000:]}")
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
  # ru_maxrss is in KiB on Linux: MiB = / 1024; decimal megabytes (the target's unit) = * 1024 / 1e6.
  return {"wall_s": seconds, "peak_rss_mib": usage.ru_maxrss / 1024,
          "peak_rss_mb": usage.ru_maxrss * 1024 / 1e6,
          "test_log_likelihood": results.get("test_log_likelihood")}


def bench_main_job(repeats: int) -> dict:
  """The main job with a cold and then a warm cache, ``repeats`` rounds; each run is reported."""
  runs = {"cold": [], "warm": []}
  load = [os.getloadavg()[0]]
  for _ in range(repeats):
    with tempfile.TemporaryDirectory() as cache:
      runs["cold"].append(main_job(cache))
      runs["warm"].append(main_job(cache))
    load.append(os.getloadavg()[0])
  print(f"Main job (python -m experiments.fit_gmm, digits), fresh process; 1-min load average "
        f"during the runs: {min(load):.1f}-{max(load):.1f}")
  for name, rs in runs.items():
    for r in rs:
      print(f"  {name} cache: {r['wall_s']:6.1f} s wall, peak memory {r['peak_rss_mib']:5.0f} MiB "
            f"= {r['peak_rss_mb']:5.0f} MB (target 600 MB), test log-likelihood "
            f"{r['test_log_likelihood']:.3f}")
  return dict(runs, load_average_1min=load)


_README_CHILD = r"""
import contextlib, io, json, re, sys, time
start = time.perf_counter()
import jax
events = {"compiles": 0, "compile_s": 0.0}
def _duration(name, secs, **kw):
  if name.endswith("backend_compile_duration"):
    events["compiles"] += 1
    events["compile_s"] += secs
jax.monitoring.register_event_duration_secs_listener(_duration)
text = open(sys.argv[1], encoding="utf-8").read()
code = re.search(r"## A GMM in ten lines\s+```python\n(.*?)```", text, re.S).group(1)
begin = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
  exec(compile(code, "README.md", "exec"), {})
end = time.perf_counter()
print(json.dumps(dict(jax_import_s=begin - start, run_s=end - begin, **events)))
"""


def bench_readme_gmm(repeats: int) -> dict:
  """The README's ten-line GMM in ``repeats`` fresh processes; each run is reported."""
  runs, load = [], [os.getloadavg()[0]]
  for _ in range(repeats):
    out = subprocess.run([sys.executable, "-c", _README_CHILD, os.path.join(_REPO, "README.md")],
                         env=_child_env(None), capture_output=True, text=True, timeout=600,
                         check=True)
    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    load.append(os.getloadavg()[0])
  print(f"The README's ten-line GMM, fresh process (no compilation cache); 1-min load average "
        f"during the runs: {min(load):.1f}-{max(load):.1f}")
  for r in runs:
    print(f"  the ten lines {r['run_s']:5.2f} s (import jax before them {r['jax_import_s']:.2f} s); "
          f"{r['compiles']} programs compiled in {r['compile_s']:.2f} s")
  return dict(runs=runs, load_average_1min=load)


def make_problem(n, d, k, covariance_type, seed):
  """A mixture of k anisotropic Gaussians (float32) and rough initial parameters for it."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * 4
  labels = rng.integers(0, k, size=n)
  mix = rng.normal(size=(k, d, d)) * 0.5 + np.eye(d)
  x = centers[labels] + np.einsum("nd,nde->ne", rng.normal(size=(n, d)), mix[labels])
  x = x.astype(np.float32)
  weights = np.full(k, 1.0 / k)
  means = x[rng.choice(n, k, replace=False)].astype(np.float64)
  var = np.var(x, axis=0).mean()
  precisions = {"full": np.stack([np.eye(d) / var] * k), "tied": np.eye(d) / var,
                "diag": np.full((k, d), 1.0 / var), "spherical": np.full(k, 1.0 / var)}
  return x, dict(weights_init=weights, means_init=means,
                 precisions_init=precisions[covariance_type])


def time_fits(make, x, repeats):
  times, model = [], None
  for _ in range(repeats):
    model = make()
    start = time.perf_counter()
    model.fit(x)
    times.append(time.perf_counter() - start)
  return times, model


def main(argv):
  del argv
  result = {}
  if FLAGS.steady:
    result.update(bench_steady())
  if FLAGS.first_fit:
    result["first_fit"] = bench_first_fits([int(k) for k in FLAGS.first_fit_components],
                                           FLAGS.first_fit_repeats)
  if FLAGS.main_job:
    result["main_job"] = bench_main_job(FLAGS.main_job_repeats)
  if FLAGS.readme_gmm:
    result["readme_gmm"] = bench_readme_gmm(FLAGS.readme_gmm_repeats)
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(result, f, indent=2)


def bench_steady() -> dict:
  """Fits after compilation at N x D x K (the module docstring's first measurement)."""
  n, d, k, iters = FLAGS.n, FLAGS.d, FLAGS.k, FLAGS.iters
  x, init = make_problem(n, d, k, FLAGS.covariance_type, FLAGS.seed)
  kw = dict(n_components=k, covariance_type=FLAGS.covariance_type, tol=0.0, max_iter=iters,
            **init)
  warnings.simplefilter("ignore", ConvergenceWarning)

  start = time.perf_counter()
  GaussianMixture(**kw).fit(x)  # compiles for these shapes
  first = time.perf_counter() - start
  ours_times, ours = time_fits(lambda: GaussianMixture(**kw), x, FLAGS.repeats)
  ref_times, ref = time_fits(lambda: sk_mixture.GaussianMixture(**kw), x, FLAGS.repeats)

  assert ours.n_iter_ == ref.n_iter_ == iters
  gap = float(np.max(np.abs(np.asarray(ours.lower_bounds_) - np.asarray(ref.lower_bounds_))))
  result = dict(
      n=n, d=d, k=k, covariance_type=FLAGS.covariance_type, iters=iters, dtype="float32",
      lvmjax_s=dict(best=min(ours_times), median=float(np.median(ours_times)), all=ours_times),
      sklearn_s=dict(best=min(ref_times), median=float(np.median(ref_times)), all=ref_times),
      speedup_best=min(ref_times) / min(ours_times),
      speedup_median=float(np.median(ref_times) / np.median(ours_times)),
      lvmjax_compile_s=first - min(ours_times),
      max_lower_bound_gap=gap,
      machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                   jax_backend=jax.default_backend(), jax=jax.__version__,
                   sklearn=sklearn.__version__,
                   devices=[str(dev) for dev in jax.devices()]))
  print(f"N={n} D={d} K={k} {FLAGS.covariance_type} float32, {iters} EM iterations per fit "
        f"({jax.default_backend()}, {os.cpu_count()} CPUs)")
  print(f"  lvmjax.sklearn.GaussianMixture.fit: best {min(ours_times):.3f} s, median "
        f"{np.median(ours_times):.3f} s  (compile, excluded: {first - min(ours_times):.1f} s)")
  print(f"  sklearn.mixture.GaussianMixture.fit: best {min(ref_times):.3f} s, median "
        f"{np.median(ref_times):.3f} s")
  print(f"  speed-up: {result['speedup_best']:.1f}x (best), {result['speedup_median']:.1f}x "
        f"(median); largest gap in mean log-likelihood per iteration: {gap:.2e}")
  return result


if __name__ == "__main__":
  app.run(main)
