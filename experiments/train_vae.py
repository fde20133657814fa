r"""Trains a VAE, IWAE or autoencoder: ``lvmjax.vae.train.train_and_evaluate(config, workdir)``.

Usage (from the repository root)::

  python -m experiments.train_vae --workdir /tmp/lvmjax_vae_digits        # quick VAE on digits
  python -m experiments.train_vae --config configs/vae_binarized_mnist.py:iwae --workdir /tmp/iwae
  python experiments/train_vae.py --config configs/vae_digits.py:ae --workdir /tmp/ae \
      --config.learning_rate=3e-4

Leaves config.json, metrics.jsonl, results.json, checkpoints/ and PNG figures in --workdir. Run
again with the same workdir to resume from the last checkpoint (e.g. after a crash or preemption).
"""
import os
import sys

if __package__ in (None, ""):  # python experiments/train_vae.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top

from experiments import common

common.ensure_importable()
_CONFIG = common.define_flags("vae_digits.py")


main = common.main_for(_CONFIG, "lvmjax.vae.train:train_and_evaluate")


if __name__ == "__main__":
  app.run(main)
