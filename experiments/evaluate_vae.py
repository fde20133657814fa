r"""Evaluates a trained VAE checkpoint: ``lvmjax.vae.train.evaluate_checkpoint(workdir, ...)``.

Usage (from the repository root)::

  python -m experiments.evaluate_vae --workdir /tmp/iwae_k5                       # k = 5000
  python -m experiments.evaluate_vae --workdir /tmp/iwae_k5 --num_importance_samples=50 \
      --num_eval_points=1000 --step=20000
  python -m experiments.evaluate_vae --workdir /tmp/iwae_k5 --estimator=ais \
      --num_eval_points=100 --ais_steps=1000 --ais_chains=16 --ais_init=encoder

Reads the config stored with the checkpoint, restores the parameters, and writes the test ELBO,
the importance-sampled log-likelihood, IWAE bounds, active units and figures to
<workdir>/evaluation/ (eval_<step>_k<k>.json, eval_*.png). With ``--estimator=ais`` it also runs
annealed importance sampling (:func:`lvmjax.vae.log_likelihood_ais`, blackjax HMC) on the same
points and adds ``log_likelihood_ais``/``nll_ais`` (file eval_<step>_k<k>_ais<T>.json).
"""
import os
import sys

if __package__ in (None, ""):  # python experiments/evaluate_vae.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from experiments import common

common.ensure_importable()
flags.DEFINE_string("workdir", None, "The train_vae run's directory (holds checkpoints/).")
flags.DEFINE_integer("num_importance_samples", 5000, "k of the log-likelihood estimate.")
flags.DEFINE_integer("num_eval_points", None, "Evaluate on this many points (fixed random "
                     "subset); default: the training config's value (0 = whole split).")
flags.DEFINE_integer("eval_batch_size", None, "Points per batch; default: the config's.")
flags.DEFINE_integer("step", None, "Checkpoint step to load; default: the latest.")
flags.DEFINE_enum("estimator", "is", ["is", "ais"], "'ais': annealed importance sampling as "
                  "well as the importance-sampled estimate (set --num_importance_samples=0 to "
                  "skip that).")
common.define_ais_flags()
flags.DEFINE_bool("figures", True, "Write figures.")
flags.DEFINE_bool("quiet", False, "No progress display.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: total number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")
flags.DEFINE_bool("distributed_auto", False, "Multi-host: let JAX detect the cluster.")
flags.DEFINE_integer("cpu_devices", 1, "Host CPU devices for JAX; 0: one per core.")


def main(argv):
  common.start(argv)
  from lvmjax.vae import train  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  ais_options = common.ais_options(f)
  results = train.evaluate_checkpoint(
      f.workdir, num_importance_samples=f.num_importance_samples,
      num_eval_points=f.num_eval_points, eval_batch_size=f.eval_batch_size, step=f.step,
      figures=f.figures, quiet=f.quiet, estimator=f.estimator,
      ais_options=ais_options if f.estimator == "ais" else None)
  common.print_results(results, os.path.join(f.workdir, "evaluation"))


if __name__ == "__main__":
  app.run(main)
