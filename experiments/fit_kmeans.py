r"""Runs K-means (Lloyd): ``lvmjax.kmeans.train.fit_and_evaluate(config, workdir)``.

Usage (from the repository root)::

  python -m experiments.fit_kmeans --workdir /tmp/lvmjax_kmeans       # K-means on the bundled digits
  python -m experiments.fit_kmeans --config.dataset=synthetic_gmm --config.num_clusters=4 --workdir /tmp/km_synth
  python experiments/fit_kmeans.py --workdir /tmp/x --config.num_clusters=5

Leaves config.json, metrics.jsonl, results.json, checkpoints/ and PNG figures in --workdir; run
again on the same workdir to resume (or, once finished, to re-evaluate).
"""
import os
import sys

if __package__ in (None, ""):  # python experiments/fit_kmeans.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top

from experiments import common

common.ensure_importable()
_CONFIG = common.define_flags("kmeans_digits.py")


# release_programs: compiled programs are freed once they are not run again (nothing else runs
# in this process), which keeps the launcher's peak memory down.
main = common.main_for(_CONFIG, "lvmjax.kmeans.train:fit_and_evaluate", release_programs=True)


if __name__ == "__main__":
  app.run(main)
