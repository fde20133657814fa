r"""GMM on scikit-learn's bundled 8x8 digits (the README's main command; no download).

Command (from the repository root)::

  python -m experiments.fit_gmm --workdir /tmp/lvmjax_gmm
  # same as: --config configs/gmm_digits.py

Fits a 10-component full-covariance mixture by EM on the 1500 training digits (64 pixels scaled to
[0, 1]), after scoring K = 1, 2, 4, ..., 16 by BIC and AIC, and evaluates on the 297 test digits.

Expected result (measured on 2 CPU cores): about 13 s wall-clock with an empty compilation
cache and 7 s with a warm one, mostly compiling: every K of the model selection runs in the
program of the largest K (``gmm.fit``'s ``num_active``; the initialisation and EM compile as two
programs, one after the other), and the final fit of ``num_components`` (10, one of
``k_values``) is the selection's fit of K=10, so nothing is compiled for it; peak memory about
500 MiB cold, about 340 MiB warm. EM converges in under 10 iterations; mean test
log-likelihood about 64 nats per digit (train about 73: full covariances overfit 1500 points);
the MAP components agree with the digit classes at ARI about 0.56-0.59;
BIC picks K=2 and AIC K=8 (BIC's log N penalty on 2145 parameters per component is heavy).
Leaves config.json, metrics.jsonl, results.json,
model_selection.json, checkpoints/, gmm_components.png (PCA scatter with each component's 1- and
2-σ ellipse), gmm_means.png (the 10 component means as 8x8 images, weights in the titles),
gmm_log_likelihood.png and gmm_model_selection.png in the workdir. A mistyped field
(``--config.num_componets=3``) stops at once with the closest valid name.

Variants: ``configs/gmm_digits.py:smoke`` (a few seconds; for tests).
"""
import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config; ``variant`` "smoke" shrinks it for tests."""
  config = ml_collections.ConfigDict()
  config.dataset = "digits"
  config.data_dir = ""            # "" = $LVMJAX_DATA_DIR or ~/.cache/lvmjax/data
  config.num_train_points = 0     # 0 = all training points
  config.synthetic = ml_collections.ConfigDict(dict(
      seed=0, num_points=1000, num_components=4, num_features=2, separation=4.0))
  config.seed = 0
  config.num_components = 10
  config.covariance_type = "full"
  config.init = "kmeans"
  config.n_init = 1
  config.max_iter = 200
  config.tol = 1e-3
  config.reg_covar = 1e-3         # pixel-variance floor: some corner pixels are always 0
  config.chunk_size = 0           # rows per E-step chunk; 0 = automatic
  config.k_values = (1, 2, 4, 6, 8, 10, 12, 16)
  config.select_k = "none"        # "none": fit num_components; "bic"/"aic": the best of k_values
  config.checkpoint_every = 10    # EM iterations per block (a checkpoint after each)
  config.max_to_keep = 2
  config.figures = True
  if variant == "smoke":
    config.init = "random_from_data"   # compiles faster than the K-means initialisation
    config.num_train_points = 300
    config.num_components = 3
    config.max_iter = 12
    config.checkpoint_every = 5
    config.k_values = (1, 3)
    config.covariance_type = "diag"
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of gmm_digits; expected 'smoke'.")
  return config
