r"""Mixtures of factor analysers / PPCA on MNIST: EM speed against the full-covariance GMM, and a
digit classifier from one mixture of PPCAs per class.

1. Seconds per EM iteration on the same MNIST rows (784 dimensions) at the same K, float32, one
   jitted EM step (:func:`lvmjax.mixture.sum_stats` + the family's M-step, the step the fits
   loop over) timed after a warm-up call: the mixture of factor analysers (diagonal noise), the
   mixture of PPCA (isotropic noise), both rank q, and ``gmm`` with full covariances (cost
   O(N K D q) against O(N K D^2)).
2. Classification: one mixture of PPCAs (K components, rank q; ``gmm.factor.fit`` with
   ``noise="isotropic"``) and one PPCA (K = 1, closed form ``ppca.fit_ppca``) per digit class on the
   training images, Bayes' rule with the class priors, :math:`\hat y = \arg\max_c \log \pi_c +
   \log p(x \mid c)`, test error on the 10000 test images. Published (Hoffmann, 2004, Table 3.1,
   MNIST, 10 units of 10 dimensions per class): mixtures of local PCA 2.77–2.79%, one PCA per
   class 4.85%.

Usage::

  nice python -m experiments.benchmark_mfa                      # the README figures
  nice python -m experiments.benchmark_mfa --subset=1000 --timing_rows=2000 --max_iter=20  # smoke

References:
  H. Hoffmann. Unsupervised learning of visuomotor associations. PhD thesis, Bielefeld
  University, 2004 (Table 3.1).
  M. E. Tipping and C. M. Bishop. Mixtures of probabilistic principal component analyzers.
  Neural Computation 11(2), 1999.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
import jax
import jax.numpy as jnp
import numpy as np

from lvmjax import data, mixture, ppca  # pylint: disable=g-import-not-at-top
from lvmjax.gmm import em, factor  # pylint: disable=g-import-not-at-top

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_DATA_DIR = os.environ.get("LVMJAX_DATA_DIR",
                                   os.path.join(_ROOT, os.pardir, "shared", "data"))
PUBLISHED = {"mixture of local PCA (Hoffmann 2004, Table 3.1)": "2.77-2.79",
             "one PCA per class (Hoffmann 2004, Table 3.1)": "4.85"}

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", _DEFAULT_DATA_DIR,
                    "Directory with mnist.npz (env LVMJAX_DATA_DIR).")
flags.DEFINE_integer("components", 10, "K: components per class, and of the timed mixtures.")
flags.DEFINE_integer("rank", 10, "q: factors per component.")
flags.DEFINE_integer("subset", 0, "Training images per class for the classifier (0: all).")
flags.DEFINE_integer("timing_rows", 10000, "Training rows the EM iterations are timed on.")
flags.DEFINE_integer("timing_iters", 3, "Timed EM iterations per model (the median is reported).")
flags.DEFINE_boolean("full_gmm", True, "Also time the full-covariance GMM (slow: O(N K D^2)).")
flags.DEFINE_integer("max_iter", 100, "EM iterations at most per class mixture.")
flags.DEFINE_float("tol", 1e-3, "EM tolerance on the mean log-likelihood (scikit-learn's rule).")
flags.DEFINE_float("reg_covar", 1e-6, "Added to the noise variances (and to the full "
                   "covariances' diagonal in the timing).")
flags.DEFINE_integer("seed", 0, "PRNG seed.")
flags.DEFINE_string("json_out", "", "Write the results as JSON here.")


def _load():
  train = data.load_dataset("mnist", "train", data_dir=FLAGS.data_dir, download=False)
  test = data.load_dataset("mnist", "test", data_dir=FLAGS.data_dir, download=False)
  return train.x, train.y, test.x, test.y


def _time_steps(family, params, x):
  """(seconds per EM step: median of FLAGS.timing_iters after a warm-up, compile seconds)."""
  xs, ws = mixture.chunk_rows(jnp.asarray(x), jnp.ones(len(x), jnp.float32),
                              mixture.default_chunk_size(x.shape[0], _num_components(params),
                                                         x.shape[1]))
  step = jax.jit(lambda p: family.m_step(p, mixture.sum_stats(family, p, xs, ws)))
  # The M-step's output types (weak types included) are those of every later step: start from
  # them, so that the warm-up compiles the one program that is timed.
  params = jax.tree.map(lambda a, s: jnp.asarray(a, s.dtype), params,
                        jax.eval_shape(step, params))
  t0 = time.perf_counter()
  params = jax.block_until_ready(step(params))
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(FLAGS.timing_iters):
    t0 = time.perf_counter()
    params = jax.block_until_ready(step(params))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), compile_s - float(np.median(times))


def _num_components(params) -> int:
  return int(np.shape(params.weights)[0])


def timing(x_train) -> dict:
  k, q = FLAGS.components, FLAGS.rank
  rng = np.random.default_rng(FLAGS.seed)
  x = x_train[rng.choice(len(x_train), min(FLAGS.timing_rows, len(x_train)), replace=False)]
  n, d = x.shape
  # One shared start: K random rows as means, the data's variances, small random loadings.
  means = jnp.asarray(x[rng.choice(n, k, replace=False)])
  var = jnp.asarray(np.tile(x.var(0) + FLAGS.reg_covar, (k, 1)))
  loadings = jnp.asarray(rng.normal(size=(k, d, q)).astype(np.float32) * 0.01)
  weights = jnp.full((k,), 1.0 / k, jnp.float32)
  out = {"rows": n, "features": d, "components": k, "rank": q}
  for noise in factor.NOISE_TYPES:
    start = factor.FactorParams(weights, means, loadings,
                                var if noise == "diagonal" else jnp.mean(var, axis=1))
    fam = factor.FactorFamily(noise, q, jnp.float32(FLAGS.reg_covar))
    out[f"factor_{noise}_s_per_iter"], out[f"factor_{noise}_compile_s"] = _time_steps(
        fam, start, x)
    print(f"  {noise} noise, rank {q}: {out[f'factor_{noise}_s_per_iter']:.3f} s/iteration",
          flush=True)
  if FLAGS.full_gmm:
    start = factor.to_gmm_params(factor.FactorParams(weights, means, loadings, var))
    fam = em.GaussianFamily("full", jnp.float32(FLAGS.reg_covar))
    out["gmm_full_s_per_iter"], out["gmm_full_compile_s"] = _time_steps(fam, start, x)
    print(f"  full-covariance GMM: {out['gmm_full_s_per_iter']:.3f} s/iteration", flush=True)
    for noise in factor.NOISE_TYPES:
      out[f"speedup_{noise}"] = out["gmm_full_s_per_iter"] / out[f"factor_{noise}_s_per_iter"]
  return out


def classifier(x_train, y_train, x_test, y_test) -> dict:
  k, q = FLAGS.components, FLAGS.rank
  classes = np.unique(y_train)
  key = jax.random.key(FLAGS.seed)
  log_prior, ll_mix, ll_pca, fits = [], [], [], []
  t_fit = 0.0
  x_test_j = jnp.asarray(x_test)
  for c in classes:
    xc = x_train[y_train == c]
    if FLAGS.subset:
      xc = xc[:FLAGS.subset]
    log_prior.append(np.log(np.mean(y_train == c)))
    t0 = time.perf_counter()
    res = factor.fit(jax.random.fold_in(key, int(c)), xc, k, q, noise="isotropic",
                     max_iter=FLAGS.max_iter, tol=FLAGS.tol, reg_covar=FLAGS.reg_covar)
    jax.block_until_ready(res.params)
    t_fit += time.perf_counter() - t0
    ll_mix.append(np.asarray(factor.log_marginal(res.params, x_test_j)))
    one = ppca.fit_ppca(xc, q)
    ll_pca.append(np.asarray(ppca.log_marginal(one, x_test_j)))
    fits.append({"class": int(c), "rows": int(len(xc)), "n_iter": int(res.n_iter),
                 "converged": bool(res.converged),
                 "train_mean_log_likelihood": float(res.lower_bound)})
    print(f"  class {c}: {len(xc)} rows, {int(res.n_iter)} EM iterations, "
          f"converged={bool(res.converged)}, mean log-lik {float(res.lower_bound):.1f}",
          flush=True)
  log_prior = np.asarray(log_prior)[None, :]
  err_mix = float(np.mean(np.argmax(np.stack(ll_mix, 1) + log_prior, 1) != y_test))
  err_pca = float(np.mean(np.argmax(np.stack(ll_pca, 1) + log_prior, 1) != y_test))
  return {"components": k, "rank": q, "train_rows_per_class": FLAGS.subset or "all",
          "test_rows": int(len(y_test)), "mppca_test_error_percent": 100 * err_mix,
          "ppca_per_class_test_error_percent": 100 * err_pca, "fit_seconds_all_classes": t_fit,
          "per_class": fits, "published_percent": PUBLISHED}


def main(argv):
  del argv
  x_train, y_train, x_test, y_test = _load()
  results = {"uptime_start": os.popen("uptime").read().strip(), "jax": jax.__version__,
             "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
             "python": platform.python_version(), "flags": {
                 f: getattr(FLAGS, f) for f in ("components", "rank", "subset", "timing_rows",
                                                "timing_iters", "max_iter", "tol", "reg_covar",
                                                "seed")}}
  print("EM seconds per iteration on MNIST (float32):", flush=True)
  results["timing"] = timing(x_train)
  print("Classifier: one mixture of PPCA per digit class:", flush=True)
  results["classifier"] = classifier(x_train, y_train, x_test, y_test)
  results["uptime_end"] = os.popen("uptime").read().strip()
  t, c = results["timing"], results["classifier"]
  print(f"\n| model (K={t['components']}, D={t['features']}, N={t['rows']}) | s / EM iteration |")
  print("| --- | --- |")
  print(f"| mixture of factor analysers, q={t['rank']} | {t['factor_diagonal_s_per_iter']:.3f} |")
  print(f"| mixture of PPCA, q={t['rank']} | {t['factor_isotropic_s_per_iter']:.3f} |")
  if "gmm_full_s_per_iter" in t:
    print(f"| GMM, full covariances | {t['gmm_full_s_per_iter']:.3f} |")
  print(f"\n| classifier (MNIST test, {c['test_rows']} images) | test error % |")
  print("| --- | --- |")
  print(f"| mixture of PPCA per class (K={c['components']}, q={c['rank']}), lvmjax | "
        f"{c['mppca_test_error_percent']:.2f} |")
  print(f"| one PPCA per class (q={c['rank']}), lvmjax | "
        f"{c['ppca_per_class_test_error_percent']:.2f} |")
  for name, value in PUBLISHED.items():
    print(f"| {name} | {value} |")
  print(f"\nuptime: {results['uptime_start']} -> {results['uptime_end']}")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
