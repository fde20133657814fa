"""Fields shared by the VAE configs, and the variants a config string can ask for.

A config string is a comma-separated list of variants after the file name, e.g.
``--config configs/vae_binarized_mnist.py:iwae,smoke``:

* ``vae`` (default): train the ELBO with one sample;
* ``iwae`` / ``iwae50``: train the IWAE bound with k = 5 / k = 50 (Burda et al., 2015);
* ``vae5`` / ``vae50``: the ELBO averaged over 5 / 50 samples (Burda's "VAE, k" baselines);
* ``ae``: the deterministic autoencoder (reconstruction log-likelihood only);
* ``smoke``: a few steps on a few hundred points with small networks, for tests.
"""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Every field the VAE launcher reads, with neutral defaults."""
  c = ml_collections.ConfigDict()
  # Data.
  c.dataset = "digits"
  c.data_dir = ""                  # "" = $LVMJAX_DATA_DIR or ~/.cache/lvmjax/data
  c.num_train_points = 0           # 0 = the whole training split
  c.dynamic_binarization = False   # binarize every batch afresh: pixel ~ Bernoulli(grey level)
  c.eval_split = "test"
  c.num_eval_points = 0            # 0 = the whole evaluation split
  c.synthetic = ml_collections.ConfigDict(dict(
      seed=0, num_points=1000, num_components=4, num_features=2, separation=4.0))
  # Model.
  c.model = "vae"                  # "vae" | "iwae" | "ae"
  c.num_samples = 1                # latent samples per point (k of the IWAE bound)
  c.beta = 1.0                     # KL weight of the ELBO
  c.kl_warmup_epochs = 0           # KL weight rising linearly from 0 to beta over these epochs
  c.architecture = "mlp"           # "mlp" | "conv" (28x28 images)
  c.hidden = (200, 200)            # MLP widths (decoder uses them reversed)
  c.activation = "tanh"
  c.latent_dim = 50
  c.likelihood = "bernoulli"       # "bernoulli" | "gaussian"
  c.gaussian_scale = 0.0           # fixed std of a Gaussian likelihood; 0 = learned per pixel
  # Optimisation.
  c.learning_rate = 1e-3
  c.lr_schedule = "constant"       # "constant" | "burda" (3^i epochs at lr * 10^(-i/7))
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-4
  c.batch_size = 100
  c.num_steps = 0                  # > 0 overrides num_epochs
  c.num_epochs = 10
  c.seed = 0
  c.compute_dtype = "float32"      # "bfloat16" for activations on GPU/TPU
  # Logging, checkpoints, evaluation.
  c.log_every = 100
  c.checkpoint_every = 1000
  c.max_to_keep = 3
  c.eval_every = 0                 # > 0: test-set ELBO every eval_every steps
  c.eval_batch_size = 100
  c.num_importance_samples = 5000  # k of the final log p(x) estimate (0 to skip)
  c.iwae_k = ()                    # extra IWAE bounds reported at the end, e.g. (5, 50)
  c.figures = True
  return c


def apply_variants(c: ml_collections.ConfigDict, variants: str | None,
                   smoke: dict | None = None) -> ml_collections.ConfigDict:
  """Applies the comma-separated ``variants`` (see the module docstring) to ``c``."""
  for v in [v.strip() for v in (variants or "").split(",") if v.strip()]:
    if v == "vae":
      c.model, c.num_samples = "vae", 1
    elif v in ("vae5", "vae50"):
      c.model, c.num_samples = "vae", int(v[3:])
    elif v in ("iwae", "iwae5", "iwae50"):
      c.model, c.num_samples = "iwae", 50 if v == "iwae50" else 5
    elif v == "ae":
      c.model, c.num_samples, c.num_importance_samples = "ae", 1, 0
    elif v == "smoke":
      c.num_train_points = 300
      c.num_eval_points = 40
      c.num_steps = 30
      c.batch_size = 20
      c.hidden = (32,)
      c.latent_dim = 4
      c.log_every = 10
      c.checkpoint_every = 10
      c.eval_batch_size = 20
      c.num_importance_samples = 20 if c.model != "ae" else 0
      c.iwae_k = ()
      for k, val in (smoke or {}).items():
        c[k] = val
    else:
      raise ValueError(f"Unknown config variant {v!r}; expected vae, vae5, vae50, iwae, iwae50, "
                       "ae or smoke (comma-separated).")
  return c
