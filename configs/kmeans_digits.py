r"""K-means on scikit-learn's bundled 8x8 digits (no download).

Command::

  python -m experiments.fit_kmeans --workdir /tmp/lvmjax_kmeans
  # same as: --config configs/kmeans_digits.py

Runs Lloyd's algorithm with k-means++ seeding (4 restarts) and K = 10 on the 1500 training digits,
after an inertia-against-K sweep over K = 2, 4, ..., 16, and scores the clusters against the
digit labels.

Expected result (CPU, 2 cores): about 10 s and 470-490 MiB peak with an empty compilation cache
(the sweep runs every K in the program of K = 16, ``kmeans.fit``'s ``num_active``: one
compilation; the final fit of K = 10 is the sweep's, so nothing is compiled for it); 18 Lloyd
iterations; the clusters agree with the digit classes at ARI about 0.66 (train) and 0.62
(test); mean squared distance to the centroid about 2.5 per digit. Leaves config.json, metrics.jsonl,
results.json, checkpoints/, kmeans_clusters.png and kmeans_inertia.png.

Other data: ``--config.dataset=synthetic_gmm --config.num_clusters=4`` (2-D blobs).
Variants: ``:smoke`` (a few seconds; for tests).
"""
import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config; ``variant`` "smoke" shrinks it for tests."""
  config = ml_collections.ConfigDict()
  config.dataset = "digits"
  config.data_dir = ""
  config.num_train_points = 0
  config.synthetic = ml_collections.ConfigDict(dict(
      seed=0, num_points=1000, num_components=4, num_features=2, separation=4.0))
  config.seed = 0
  config.num_clusters = 10
  config.init = "k-means++"
  config.n_init = 4
  config.max_iter = 300
  config.tol = 1e-4
  config.chunk_size = 0
  config.k_values = (2, 4, 6, 8, 10, 12, 16)
  config.checkpoint_every = 10
  config.max_to_keep = 2
  config.figures = True
  if variant == "smoke":
    config.num_train_points = 300
    config.num_clusters = 4
    config.n_init = 1
    config.init = "random"          # compiles faster than k-means++
    config.max_iter = 20
    config.checkpoint_every = 10
    config.k_values = (2, 4)
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of kmeans_digits; expected 'smoke'.")
  return config
