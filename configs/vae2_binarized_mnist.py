r"""Two stochastic layers (Burda, Grosse & Salakhutdinov 2016) on binarized MNIST.

Commands::

  python -m experiments.train_vae --config configs/vae2_binarized_mnist.py:iwae --workdir /tmp/iwae2_k5
  python -m experiments.train_vae --config configs/vae2_binarized_mnist.py:iwae50,dynamic \
      --workdir /tmp/iwae2_k50_dyn
  python -m experiments.evaluate_vae --workdir /tmp/iwae2_k5 --estimator=ais --num_eval_points=100

Setup: ``config.stochastic_layers = 2`` selects :func:`lvmjax.vae.hierarchical.burda_model`:
q(z1 | x) 784-200-200-100, q(z2 | z1) 100-100-100-50, p(z1 | z2) 50-100-100-100,
p(x | z1) 100-200-200-784, tanh, Gaussian stochastic layers, Bernoulli likelihood, N(0, I) prior on
z2; Adam (lr 1e-3, eps 1e-4), batch 100, Burda's schedule (3280 epochs), test log-likelihood by
importance sampling with k = 5000, active units per layer (``active_units_z1``,
``active_units_z2``). The default trains on the statically binarized images; ``dynamic`` on MNIST
binarized afresh in each batch, as Burda et al. did.

Expected result (Burda et al. 2016, two layers, dynamic binarization, full schedule): test NLL
85.33 (VAE, k = 1) and 82.90 (IWAE, k = 50). What lvmjax measured on a CPU is in the README (short
runs; the full schedule has not been run here).
Time: the full schedule is 1.64M steps (a GPU for a day or more); ``--config.num_steps`` shortens it.

Variants (comma-separated): ``vae`` (default), ``vae5``/``vae50``, ``iwae`` (k=5), ``iwae50``,
``dynamic``, ``smoke`` (tests: small networks, a few steps).
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from configs import vae_binarized_mnist  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(variants: str | None = None):
  """The one-layer binarized-MNIST config with the second stochastic layer switched on."""
  names = [v.strip() for v in (variants or "").split(",") if v.strip()]
  c = vae_binarized_mnist.get_config(",".join(v for v in names if v != "smoke"))
  c.stochastic_layers = 2
  c.latent_dim = 100          # z1
  c.latent_dim2 = 50          # z2
  c.hidden = (200, 200)       # between x and z1
  c.hidden2 = (100, 100)      # between z1 and z2
  if "smoke" in names:
    c.num_train_points, c.num_eval_points, c.num_steps, c.batch_size = 300, 40, 30, 20
    c.hidden, c.hidden2, c.latent_dim, c.latent_dim2 = (32,), (16,), 4, 2
    c.log_every = c.checkpoint_every = 10
    c.eval_batch_size, c.num_importance_samples, c.iwae_k = 20, 20, (5,)
    c.lr_schedule = "constant"
  return c
