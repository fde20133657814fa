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
from absl import flags

from experiments import common

common.ensure_importable()
_CONFIG = common.define_flags("vae_digits.py")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  common.start()
  from lvmjax.vae import train  # pylint: disable=g-import-not-at-top
  run = train.train_and_evaluate(_CONFIG.value, flags.FLAGS.workdir, quiet=flags.FLAGS.quiet)
  common.print_results(run.results, flags.FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
