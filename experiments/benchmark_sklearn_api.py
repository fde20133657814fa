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

Usage::

  python -m experiments.benchmark_sklearn_api               # N=65536, D=16, K=32, full, 10 iters
  python -m experiments.benchmark_sklearn_api --n=4096 --iters=3 --repeats=1   # a smoke run
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
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
