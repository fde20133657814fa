r"""A convolutional VAE on Fashion-MNIST (binarized afresh in each batch).

Command::

  python -m experiments.train_vae --config configs/conv_vae_fashion_mnist.py --workdir /tmp/conv_vae

Encoder: two stride-2 3x3 convolutions (32, 64 channels, ReLU), a dense layer of 256, Gaussian
heads for a 16-D latent; decoder: dense to 7x7x64, two stride-2 transposed convolutions back to
28x28 Bernoulli logits (``lvmjax.vae.ConvEncoder``/``ConvDecoder``). Adam lr 1e-3, batch 100,
30 epochs (18000 steps) on the 60000 training images, each pixel ~ Bernoulli(grey level) drawn
afresh per batch; evaluated on the 10000 test images (binarized once) with k = 5000.

Expected result: NOT MEASURED in this repository yet (no accelerator was available when it was
written); minutes on a GPU, about an hour on a CPU. Figures show recognisable garments in the prior
samples and reconstructions, and classes (trousers, bags, footwear) as separate regions of the
latent PCA plane.

Variants: ``iwae``, ``ae``, ``smoke`` (tests; needs the data file), comma-separated.
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
  c.dataset = "fashion_mnist"
  c.dynamic_binarization = True
  c.architecture = "conv"
  c.latent_dim = 16
  c.activation = "relu"
  c.learning_rate = 1e-3
  c.batch_size = 100
  c.num_epochs = 30
  c.log_every = 200
  c.checkpoint_every = 2000
  c.eval_every = 6000
  c.num_importance_samples = 5000
  return vae_base.apply_variants(c, variants, smoke=dict(latent_dim=4))
