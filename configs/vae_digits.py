r"""A quick VAE on scikit-learn's bundled 8x8 digits (no download; CPU-friendly).

Command::

  python -m experiments.train_vae --workdir /tmp/lvmjax_vae_digits
  # same as: --config configs/vae_digits.py

An MLP VAE 64-128-128-2 (tanh, Bernoulli likelihood, a 2-D latent space so the latent figure
needs no projection) trained by Adam (lr 1e-3, batch 100) for 3000 steps (200 epochs) on the 1500
training digits, binarized afresh in each batch (pixel ~ Bernoulli(intensity / 16)). Evaluated on
the 297 test digits (binarized once) with the k = 5000 importance-sampled log-likelihood.

Expected result (CPU, 2 shared cores; measured): about 45 s in all (3000 steps at ~300 steps/s,
then ~10 s of evaluation); test log-likelihood (k = 5000) about -23.6 nats per digit, test ELBO
about -24.1 (KL about 2.7 nats); both latent units active.
Figures: vae_samples.png, vae_reconstructions.png, vae_latent_space.png (coloured by digit),
vae_interpolation.png, vae_training_curves.png.

Variants: ``:iwae`` (k=5), ``:ae``, ``:smoke`` (seconds, for tests), combinable: ``:iwae,smoke``.
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from configs import vae_base  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(variants: str | None = None):
  """Returns the config; ``variants`` as in :mod:`configs.vae_base`."""
  c = vae_base.base_config()
  c.dataset = "digits"
  c.dynamic_binarization = True
  c.hidden = (128, 128)
  c.latent_dim = 2
  c.num_steps = 3000
  c.log_every = 100
  c.checkpoint_every = 500
  c.eval_every = 500
  return vae_base.apply_variants(c, variants, smoke=dict(latent_dim=2, eval_every=0))
