r"""GMM model selection on synthetic data from a known 4-component mixture in 2-D.

Command::

  python -m experiments.fit_gmm --config configs/gmm_synthetic.py --workdir /tmp/lvmjax_gmm_synth

Draws 1000 training and 1000 test points from a random 4-component full-covariance mixture in
two dimensions (means at least 4 units apart), fits K = 1..8 by EM, picks K by BIC, refits with it
and compares with the true mixture.

Expected result (CPU): under a minute; BIC picks K = 4 (the true K); the fitted model's test
log-likelihood is within about 0.02 nats per point of the true mixture's. AIC may pick a larger
K. Figures: gmm_components.png (data with the fitted ellipses), gmm_model_selection.png (BIC
and AIC against K with the true K marked), gmm_log_likelihood.png.

Variants: ``:smoke`` (K = 2..5, 400 points; a few seconds).
"""
import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config; ``variant`` "smoke" shrinks it for tests."""
  config = ml_collections.ConfigDict()
  config.dataset = "synthetic_gmm"
  config.data_dir = ""
  config.num_train_points = 0
  config.synthetic = ml_collections.ConfigDict(dict(
      seed=0, num_points=1000, num_components=4, num_features=2, separation=4.0))
  config.seed = 0
  config.num_components = 4        # used only when select_k == "none"
  config.covariance_type = "full"
  config.init = "kmeans"
  config.n_init = 3
  config.max_iter = 200
  config.tol = 1e-4
  config.reg_covar = 1e-6
  config.chunk_size = 0
  config.k_values = (1, 2, 3, 4, 5, 6, 7, 8)
  config.select_k = "bic"
  config.checkpoint_every = 20
  config.max_to_keep = 2
  config.figures = True
  if variant == "smoke":
    config.init = "random_from_data"   # compiles faster than the K-means initialisation
    config.synthetic.num_points = 400
    config.k_values = (2, 4, 5)
    config.n_init = 1
    config.max_iter = 40
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of gmm_synthetic; expected 'smoke'.")
  return config
