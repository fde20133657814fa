r"""VAE and IWAE on statically binarized MNIST in the setup of Burda, Grosse & Salakhutdinov (2015).

Commands::

  python -m experiments.train_vae --config configs/vae_binarized_mnist.py --workdir /tmp/vae_k1
  python -m experiments.train_vae --config configs/vae_binarized_mnist.py:iwae --workdir /tmp/iwae_k5
  python -m experiments.train_vae --config configs/vae_binarized_mnist.py:iwae50 --workdir /tmp/iwae_k50
  python -m experiments.evaluate_vae --workdir /tmp/iwae_k5       # k = 5000 log-likelihood again

Setup: one stochastic layer, MLP 784-200-200-50 with tanh (encoder and decoder), Bernoulli
likelihood, Adam (lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-4), batch 100, Burda's learning-rate
schedule (3^i epochs at 1e-3 * 10^(-i/7), i = 0..7: 3280 epochs, 1.64M steps on the 50000 training
images), test log-likelihood by importance sampling with k = 5000 on the 10000 test images, active
units with threshold 0.01. The ``dynamic`` variant trains on MNIST binarized afresh in each batch
(60000 images), as Burda et al. did.

Expected result: Burda, Grosse & Salakhutdinov (2015, one stochastic layer) report negative test
log-likelihoods (k = 5000) of 88.71 / 87.63 / 87.10 nats for IWAE k = 1 / 5 / 50 on this static
binarization, and 86.76 (VAE) and 84.78 (IWAE, k = 50) on dynamically binarized MNIST (the
``dynamic`` variant). What lvmjax measured is in the README's VAE table (CPU runs of limited length;
the full schedule has not been run here).
Time: the full schedule is 1.64M small steps (hours on one GPU; days on a CPU);
``--config.num_epochs=100 --config.lr_schedule=constant`` is a shorter run.

Variants (comma-separated): ``vae`` (default), ``vae5``/``vae50`` (ELBO averaged over k samples),
``iwae`` (k=5), ``iwae50``, ``ae``, ``dynamic``, ``smoke`` (tests; needs the data file).
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from configs import vae_base  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(variants: str | None = None):
  """Returns the config; ``variants`` as in :mod:`configs.vae_base`, plus ``dynamic``."""
  c = vae_base.base_config()
  c.dataset = "binarized_mnist"
  c.hidden = (200, 200)
  c.activation = "tanh"
  c.latent_dim = 50
  c.learning_rate = 1e-3
  c.adam_eps = 1e-4
  c.batch_size = 100
  c.lr_schedule = "burda"
  c.num_epochs = 3280
  c.log_every = 500
  c.checkpoint_every = 10000
  c.eval_every = 50000
  c.eval_batch_size = 100
  c.num_importance_samples = 5000
  c.iwae_k = (5, 50)
  rest = []
  for v in [v.strip() for v in (variants or "").split(",") if v.strip()]:
    if v == "dynamic":
      c.dataset = "dynamic_mnist"
    else:
      rest.append(v)
  return vae_base.apply_variants(c, ",".join(rest), smoke=dict(num_epochs=1, lr_schedule="constant"))
