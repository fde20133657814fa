r"""Fits a Gaussian mixture by EM: ``lvmjax.gmm.train.fit_and_evaluate(config, workdir)``.

Usage (from the repository root)::

  python -m experiments.fit_gmm --workdir /tmp/lvmjax_gmm          # GMM on the bundled digits
  python -m experiments.fit_gmm --config configs/gmm_synthetic.py --workdir /tmp/gmm_synth
  python experiments/fit_gmm.py --workdir /tmp/x --config.num_components=5 --config.max_iter=50

Leaves config.json, metrics.jsonl, results.json, checkpoints/ and PNG figures in --workdir; run
again on the same workdir to resume (or, once finished, to re-evaluate).
"""
import os
import sys

if __package__ in (None, ""):  # python experiments/fit_gmm.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top

from experiments import common

common.ensure_importable()
_CONFIG = common.define_flags("gmm_digits.py")


# release_programs: the model selection's programs (one for every K) are freed after use and
# each compilation's spare memory is handed back, which keeps the main job's peak memory down;
# nothing else runs in this process.
main = common.main_for(_CONFIG, "lvmjax.gmm.train:fit_and_evaluate", release_programs=True)


if __name__ == "__main__":
  app.run(main)
