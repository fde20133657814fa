r"""Benchmark: Burda et al. (2015) one-stochastic-layer VAE / IWAE on binarized MNIST.

Model: encoder 784-200-200-(50+50), decoder 50-200-200-784, tanh, Bernoulli likelihood, prior
N(0, I) (``--prior=vamp``: the VampPrior; ``--stochastic_layers=2``: Burda et al.'s two-layer
model, z1 of 100 and z2 of 50 units, :mod:`lvmjax.vae.hierarchical`); Adam (lr 1e-3, eps 1e-4 as in Burda et al.), batch 100, constant learning rate. Data:
``binarized_mnist.npz`` (``--dataset=static``, Larochelle & Murray's fixed binarization: 50000
train, 10000 valid, 10000 test) or ``mnist.npz`` (``--dataset=dynamic``: 60000 train images
binarized afresh each epoch by a Bernoulli draw of the pixel intensities; the 10000 test images
binarized once with a fixed seed).

Training runs until ``--time_budget_s`` seconds of training or ``--epochs`` epochs, whichever
comes first. With the static data the parameters with the best validation ELBO (checked every
``--valid_every_epochs`` epochs) are kept, since that binarization overfits. Then the test set
(all 10000 images) is evaluated: log-likelihood by importance sampling with ``--eval_k`` samples
(5000), ELBO, KL, reconstruction, IWAE bounds and active units (Var_x E_q[z_u|x] > 0.01).

With ``--torch``, a PyTorch implementation of the same model, objective, optimizer and batch size
runs in the same process (``torch`` is not a dependency of lvmjax; it is imported only
here). lvmjax is timed twice: one step per jitted call (``vae.jit_train_step``), and
``--steps_per_call`` steps per jitted call (``vae.jit_multi_train_step``: a ``lax.scan`` over a
stack of that many batches, unrolled ``--scan_unroll`` steps per loop iteration; the same steps,
one Adam update per batch of 100, the same numbers as the one-step calls, with one dispatch from
Python per call). PyTorch is the plain eager loop, one Python-level step per batch, timed at 1
and ``os.cpu_count()`` threads. Every timed function runs on the same batches, after warm-up, for
``--throughput_s`` seconds in all, split into ``--throughput_rounds`` rounds taken in turns (so
that a busy spell of the machine falls on all of them); the median round is reported, and
compile (first-call) time apart. ``--time_budget_s=0 --epochs=0`` times only.
``--steps_per_call`` also sets how the training run steps (stacks of that many batches per call,
single steps for an epoch's remainder). ``--torch_compile`` adds PyTorch with ``torch.compile``
(loss, gradient and Adam step compiled; needs a C++ compiler) at ``os.cpu_count()`` threads.

Commands (from the repository root)::

  # one hour of VAE training on static binarized MNIST, then the k=5000 test NLL
  python experiments/benchmark_vae.py --dataset=static --objective=vae --time_budget_s=3600 \
      --output_json=/tmp/vae_1h.json
  # throughput against PyTorch only, 60 s each (3 rounds of 20 s), lvmjax with 1 and with 20
  # steps per jitted call
  python experiments/benchmark_vae.py --torch --time_budget_s=0 --epochs=0 --throughput_s=60
  # IWAE, k=5, on dynamically binarized MNIST
  python experiments/benchmark_vae.py --dataset=dynamic --objective=iwae --k=5
  # the VampPrior (500 pseudo-inputs) and Burda's two-layer IWAE (k=5), one hour each
  python experiments/benchmark_vae.py --prior=vamp --time_budget_s=3600 --final_learning_rate=1e-4
  python experiments/benchmark_vae.py --stochastic_layers=2 --objective=iwae --k=5 \
      --time_budget_s=3600 --final_learning_rate=1e-4
  # AIS (Wu et al. 2016) next to IS k=5000 and the IWAE bounds on 100 test points of a saved
  # model (train with --save_params=vae.msgpack first); --eval_k=0 skips the full-test-set IS
  python experiments/benchmark_vae.py --load_params=vae.msgpack --time_budget_s=0 --epochs=0 \
      --eval_k=0 --ais_points=100 --ais_steps=1000 --ais_chains=16

Output: a summary on stdout and a JSON file (``--output_json``) with every figure and flag.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position

from flax import serialization  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from lvmjax import vae  # pylint: disable=g-import-not-at-top,wrong-import-position
from lvmjax.vae import hierarchical  # pylint: disable=g-import-not-at-top,wrong-import-position

_DEFAULT_DATA_DIR = os.environ.get("LVMJAX_DATA_DIR",
                                   os.path.join(_ROOT, os.pardir, "shared", "data"))

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "static", ["static", "dynamic"],
                  "static: binarized_mnist.npz (Larochelle & Murray); dynamic: mnist.npz, "
                  "a fresh Bernoulli binarization each epoch.")
flags.DEFINE_enum("objective", "vae", ["vae", "iwae"], "Training objective.")
flags.DEFINE_integer("k", 1, "Samples per point: ELBO samples (vae) or IWAE k (iwae).")
flags.DEFINE_float("time_budget_s", 3600.0, "Training wall-clock budget in seconds (0: none).")
flags.DEFINE_integer("epochs", None, "Maximum number of epochs (None: until the time budget).")
flags.DEFINE_string("data_dir", _DEFAULT_DATA_DIR,
                    "Directory with binarized_mnist.npz / mnist.npz (env LVMJAX_DATA_DIR).")
flags.DEFINE_bool("torch", False, "Also time a PyTorch implementation (pip install torch).")
flags.DEFINE_float("throughput_s", 60.0,
                   "Seconds of timed steps per timed function (lvmjax one step per call, lvmjax "
                   "several steps per call, PyTorch per thread count) with --torch.")
flags.DEFINE_integer("steps_per_call", 20,
                     "Training steps per jitted call in lvmjax's multi-step mode "
                     "(vae.jit_multi_train_step), timed next to one step per call; also used by "
                     "the training run (1: one step per call).")
flags.DEFINE_integer("scan_unroll", 2, "Steps per loop iteration of the multi-step lax.scan.")
flags.DEFINE_integer("throughput_rounds", 3,
                     "With --torch, every timed function runs this many times in turn, "
                     "--throughput_s / rounds seconds each; the median round is reported.")
flags.DEFINE_bool("torch_compile", False,
                  "With --torch, also time PyTorch with torch.compile (loss, gradient and Adam "
                  "step; needs a C++ compiler) at os.cpu_count() threads.")
flags.DEFINE_list("torch_threads", None,
                  "torch.set_num_threads values to time PyTorch with (default: 1 and "
                  "os.cpu_count(), the latter being the threads XLA:CPU uses).")
flags.DEFINE_integer("eval_k", 5000, "Importance samples for the test log-likelihood (0: skip).")
flags.DEFINE_list("eval_iwae_k", ["5", "50"], "IWAE bounds to report on the test set.")
flags.DEFINE_integer("eval_batch_size", 100, "Test points per evaluation batch.")
flags.DEFINE_integer("eval_chunk_size", 500, "Importance samples per chunk in evaluation.")
flags.DEFINE_integer("eval_max_points", None, "Evaluate on a random subset of the test set, "
                     "the same for every run with the same --seed (default: all 10000 points).")
flags.DEFINE_integer("batch_size", 100, "Training batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_float("adam_eps", 1e-4, "Adam epsilon (Burda et al.: 1e-4).")
flags.DEFINE_float("final_learning_rate", None,
                   "If set, the learning rate decays exponentially in training time from "
                   "--learning_rate to this value at --time_budget_s (set once per epoch), like "
                   "Burda et al.'s 1e-3 -> 1e-4 schedule compressed into the budget. Default: "
                   "constant.")
flags.DEFINE_integer("latent_dim", None, "Latent dimension (of z1 with two layers); None: 50, "
                     "or 100 with --stochastic_layers=2 (Burda et al.).")
flags.DEFINE_list("hidden", ["200", "200"], "Hidden widths of encoder and decoder.")
flags.DEFINE_enum("prior", "standard", ["standard", "vamp"],
                  "p(z): N(0, I), or the VampPrior (Tomczak & Welling 2018) over "
                  "--num_pseudo_inputs learnable pseudo-inputs.")
flags.DEFINE_integer("num_pseudo_inputs", 500, "K of the VampPrior (--prior=vamp).")
flags.DEFINE_enum("pseudo_input_init", "random", ["random", "data"],
                  "The VampPrior's pseudo-inputs start from N(0.05, 0.01^2) (random) or at random "
                  "training images (data: the paper's 'VampPrior data').")
flags.DEFINE_integer("kl_warmup_epochs", 0, "The ELBO's KL weight rises linearly from 0 to 1 over "
                     "this many epochs (0: none); the VampPrior needs it.")
flags.DEFINE_integer("stochastic_layers", 1, "1, or 2 for Burda et al.'s two-layer model "
                     "(lvmjax.vae.hierarchical: z1 --latent_dim, z2 --latent_dim2).")
flags.DEFINE_integer("latent_dim2", 50, "z2's dimension with --stochastic_layers=2.")
flags.DEFINE_list("hidden2", ["100", "100"], "Hidden widths between z1 and z2 (two layers).")
flags.DEFINE_integer("ais_points", 0,
                     "Also estimate log p(x) by AIS (lvmjax.vae.log_likelihood_ais) on this many "
                     "random test points, next to IS (--ais_is_k) and the IWAE bounds on the same "
                     "points (0: no AIS).")
flags.DEFINE_integer("ais_is_k", 5000, "Importance samples for IS on the AIS points.")
flags.DEFINE_string("ais_values_out", None,
                    "With --ais_points: write each point's AIS estimate to this .npy file, in the "
                    "order of the points (a prefix of one permutation that depends on --seed "
                    "only), so that two runs' estimators can be paired on the same points.")
common.define_ais_flags()
flags.DEFINE_string("save_params", None, "Write the evaluated params here (flax msgpack).")
flags.DEFINE_string("load_params", None, "Evaluate these params (from --save_params) instead of "
                    "training (use with --time_budget_s=0 --epochs=0).")
flags.DEFINE_integer("valid_every_epochs", 5,
                     "Static data: validation ELBO every N epochs; the best params are kept.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_float("log_every_s", 60.0, "Progress line every N seconds.")
flags.DEFINE_string("output_json", "benchmark_vae.json", "Where to write the results.")


def load_data(dataset: str, data_dir: str, seed: int):
  """Returns (train, valid or None, test) as uint8 arrays of 0/1 (train: intensities if dynamic).

  For ``dynamic`` the train array holds probabilities in [0, 1] (float32) to be binarized per epoch.
  """
  if dataset == "static":
    path = os.path.join(data_dir, "binarized_mnist.npz")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found; pass --data_dir or set LVMJAX_DATA_DIR.")
    d = np.load(path)
    unpack = lambda a: np.unpackbits(a, axis=1)[:, :784]
    return unpack(d["train_bits"]), unpack(d["valid_bits"]), unpack(d["test_bits"])
  path = os.path.join(data_dir, "mnist.npz")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found; pass --data_dir or set LVMJAX_DATA_DIR.")
  d = np.load(path)
  train = d["x_train"].reshape(-1, 784).astype(np.float32) / 255.0
  test_p = d["x_test"].reshape(-1, 784).astype(np.float32) / 255.0
  test = (np.random.default_rng(seed + 12345).random(test_p.shape) < test_p).astype(np.uint8)
  return train, None, test


def epoch_data(train: np.ndarray, dataset: str, rng: np.random.Generator) -> np.ndarray:
  """The epoch's training images (uint8 0/1), shuffled; a fresh binarization when dynamic."""
  perm = rng.permutation(train.shape[0])
  if dataset == "dynamic":
    probs = train[perm]
    return (rng.random(probs.shape, dtype=np.float32) < probs).astype(np.uint8)
  return train[perm]


def make_model(latent_dim: int, hidden: tuple[int, ...], prior: str = "standard",
               num_pseudo_inputs: int = 500, stochastic_layers: int = 1, latent_dim2: int = 50,
               hidden2: tuple[int, ...] = (100, 100)):
  """Burda et al.'s MLP VAE (one layer, any prior) or their two-layer model."""
  if stochastic_layers == 2:
    if prior != "standard":
      raise app.UsageError("--stochastic_layers=2 has the standard normal prior on z2 only.")
    return hierarchical.burda_model(784, latent_dims=(latent_dim, latent_dim2),
                                    hidden=(hidden, hidden2), activation="tanh")
  if stochastic_layers != 1:
    raise app.UsageError(f"--stochastic_layers must be 1 or 2, got {stochastic_layers}.")
  p = (vae.VampPrior(num_pseudo_inputs=num_pseudo_inputs, data_shape=(784,))
       if prior == "vamp" else None)
  return vae.VAE(vae.MLPEncoder(latent_dim, hidden, "tanh"),
                 vae.MLPDecoder(784, hidden, "tanh"), vae.BernoulliLikelihood(), prior=p)


# ------------------------------------------------------------------------------------------------
# PyTorch reference implementation (throughput only)


def make_torch_trainer(objective: str, k: int, latent_dim: int, hidden, lr: float, eps: float,
                       seed: int, compile_: bool = False):
  """Returns ``step(x_uint8_numpy) -> loss`` for the same model in PyTorch.

  With ``compile_``, the loss (and so its gradient) and the Adam step go through
  ``torch.compile``; the loop stays one Python-level step per batch.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)

  def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
      layers.append(nn.Linear(a, b))
      if i < len(sizes) - 2:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)

  encoder = mlp([784, *hidden, 2 * latent_dim])
  decoder = mlp([latent_dim, *hidden, 784])
  params = list(encoder.parameters()) + list(decoder.parameters())
  opt = torch.optim.Adam(params, lr=lr, eps=eps)
  half_log_2pi = 0.5 * math.log(2 * math.pi)

  def loss_fn(x):
    h = encoder(x)
    mu, log_var = h[:, :latent_dim], h[:, latent_dim:]
    std = torch.exp(0.5 * log_var)
    eps_ = torch.randn((k,) + mu.shape)
    z = mu + std * eps_                                               # (k, B, L)
    logits = decoder(z)                                               # (k, B, 784)
    log_px = -nn.functional.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none").sum(-1)         # (k, B)
    if objective == "vae":
      kl = 0.5 * (log_var.exp() + mu ** 2 - 1.0 - log_var).sum(-1)
      return -(log_px.mean(0) - kl).mean()
    log_pz = (-0.5 * z ** 2 - half_log_2pi).sum(-1)
    log_q = (-0.5 * eps_ ** 2 - 0.5 * log_var - half_log_2pi).sum(-1)
    log_w = log_px + log_pz - log_q
    return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()

  opt_step = opt.step
  if compile_:
    loss_fn = torch.compile(loss_fn)
    opt_step = torch.compile(opt.step)

  def step(x_np):
    x = torch.from_numpy(x_np).float()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(x)
    loss.backward()
    opt_step()
    return loss

  return step


def time_steps(step, batches, seconds: float, sync, steps_per_call: int = 1,
               warm: bool = False) -> dict:
  """Runs ``step`` over ``batches`` (cycled): first call timed apart, then 5 warm-up calls,
  then as many calls as fit in ``seconds``. ``sync(out)`` waits for the result. Each call
  takes ``steps_per_call`` training steps: ``batches[i]`` is one batch ``(B, D)`` or, for
  several steps per call, a stack ``(steps_per_call, B, D)``. ``warm``: skip the first call
  and the warm-up (a later round of the same ``step``)."""
  first = None
  if not warm:
    t0 = time.perf_counter()
    sync(step(batches[0]))
    first = time.perf_counter() - t0
    for i in range(1, 6):
      out = step(batches[i % len(batches)])
    sync(out)
  sync_every = max(1, 20 // steps_per_call)
  n, i = 0, 6
  t0 = time.perf_counter()
  c0 = time.process_time()
  while True:
    out = step(batches[i % len(batches)])
    n += 1
    i += 1
    if n % sync_every == 0:
      sync(out)
      if time.perf_counter() - t0 >= seconds:
        break
  sync(out)
  elapsed = time.perf_counter() - t0
  cpu = time.process_time() - c0
  batch_size = batches[0].shape[-2]
  steps = n * steps_per_call
  return {"first_step_s": first, "steps": steps, "steps_per_call": steps_per_call,
          "seconds": elapsed, "cpu_seconds": cpu,
          "examples_per_s": steps * batch_size / elapsed,
          "examples_per_cpu_s": steps * batch_size / cpu}


# ------------------------------------------------------------------------------------------------


def evaluate_test(model, params, eval_key, test, evaluate_fn, latent_dim) -> dict:
  """The test figures (IS log-likelihood, bounds, active units); with --ais_points, AIS too."""
  x_eval = test
  if FLAGS.eval_max_points:
    # A generator of its own: the subset depends on --seed only, not on how many epochs the
    # training's generator drew, so runs with the same seed are scored on the same images.
    x_eval = test[np.random.default_rng(FLAGS.seed + 555).permutation(
        test.shape[0])[:FLAGS.eval_max_points]]
  t0 = time.perf_counter()
  last = [t0]

  def progress(done, total):
    if time.perf_counter() - last[0] > FLAGS.log_every_s:
      last[0] = time.perf_counter()
      print(f"  evaluating: {done}/{total} points, {last[0] - t0:.0f} s", flush=True)

  iwae_k = tuple(int(k) for k in FLAGS.eval_iwae_k)
  ev = evaluate_fn(model, params, eval_key, x_eval, batch_size=FLAGS.eval_batch_size,
                   num_samples_ll=FLAGS.eval_k, iwae_k=iwae_k,
                   chunk_size=FLAGS.eval_chunk_size, progress=progress)
  ev["eval_s"] = time.perf_counter() - t0
  extra = "".join(f", {name} {ev[name]:.2f}" for name in ("kl", "reconstruction") if name in ev)
  print(f"test ({ev['num_points']} points): NLL (k={FLAGS.eval_k}) "
        f"{ev.get('nll', float('nan')):.2f} nats, ELBO {ev['elbo']:.2f}{extra}, "
        + ", ".join(f"IWAE-{k} {ev[f'iwae_{k}']:.2f}" for k in iwae_k)
        + f", active units {ev['active_units']} (latent {latent_dim}) "
        f"(evaluation {ev['eval_s']:.0f} s)", flush=True)
  if FLAGS.ais_points:
    # AIS next to IS and the IWAE bounds on the same random test points (Wu et al.'s comparison)
    x_ais = test[np.random.default_rng(FLAGS.seed + 777).permutation(
        test.shape[0])[:FLAGS.ais_points]]
    sub = evaluate_fn(model, params, jax.random.fold_in(eval_key, 11), x_ais,
                      batch_size=min(FLAGS.eval_batch_size, len(x_ais)),
                      num_samples_ll=FLAGS.ais_is_k, iwae_k=iwae_k,
                      chunk_size=FLAGS.eval_chunk_size)
    t0 = time.perf_counter()
    ais_ev = vae.ais.evaluate_ais(model, params, jax.random.fold_in(eval_key, 7), x_ais,
                                  batch_size=min(FLAGS.eval_batch_size, len(x_ais)),
                                  progress=progress, return_values=True,
                                  **common.ais_options(FLAGS))
    ais_ev["ais_s"] = time.perf_counter() - t0
    values = ais_ev.pop("values")
    if FLAGS.ais_values_out:
      np.save(FLAGS.ais_values_out, values)
    ev["subset"] = {"num_points": len(x_ais), "elbo": sub["elbo"],
                    **{f"iwae_{k}": sub[f"iwae_{k}"] for k in iwae_k},
                    "log_likelihood_is": sub.get("log_likelihood"), **ais_ev}
    print(f"test subset ({len(x_ais)} points): ELBO {sub['elbo']:.2f}, "
          + ", ".join(f"IWAE-{k} {sub[f'iwae_{k}']:.2f}" for k in iwae_k)
          + f", IS (k={FLAGS.ais_is_k}) {sub.get('log_likelihood', float('nan')):.2f}, "
          f"AIS ({FLAGS.ais_steps} steps, {FLAGS.ais_chains} chains, from {FLAGS.ais_init}) "
          f"{ais_ev['log_likelihood_ais']:.2f} +- {ais_ev['log_likelihood_ais_sem']:.2f} "
          f"({ais_ev['ais_s']:.0f} s)", flush=True)
  return ev


def main(argv):
  del argv
  hidden = tuple(int(h) for h in FLAGS.hidden)
  objective = "elbo" if FLAGS.objective == "vae" else "iwae"
  bs = FLAGS.batch_size
  rng = np.random.default_rng(FLAGS.seed)
  train, valid, test = load_data(FLAGS.dataset, FLAGS.data_dir, FLAGS.seed)
  print(f"lvmjax VAE benchmark: dataset={FLAGS.dataset} objective={FLAGS.objective} k={FLAGS.k} "
        f"train={train.shape} test={test.shape} jax={jax.__version__} "
        f"devices={jax.devices()} cpu_count={os.cpu_count()}", flush=True)
  layers = FLAGS.stochastic_layers
  latent_dim = FLAGS.latent_dim or (100 if layers == 2 else 50)
  model = make_model(latent_dim, hidden, FLAGS.prior, FLAGS.num_pseudo_inputs, layers,
                     FLAGS.latent_dim2, tuple(int(h) for h in FLAGS.hidden2))
  if FLAGS.torch and (layers != 1 or FLAGS.prior != "standard"):
    raise app.UsageError("--torch times the one-layer, standard-prior model only.")
  two = isinstance(model, hierarchical.HierarchicalVAE)
  elbo_fn = hierarchical.elbo if two else vae.elbo
  evaluate_fn = hierarchical.evaluate if two else vae.evaluate
  optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=FLAGS.learning_rate,
                                                   eps=FLAGS.adam_eps)
  key = jax.random.key(FLAGS.seed)
  init_key, step_key, eval_key = jax.random.split(key, 3)
  state = vae.create_train_state(init_key, model, test[:bs], optimizer)
  if FLAGS.prior == "vamp" and FLAGS.pseudo_input_init == "data":
    state = vae.TrainState(state.step, vae.pseudo_inputs_from_data(
        model, state.params, jax.random.fold_in(init_key, 2), train), state.opt_state)
  if two:  # the two-layer bounds as a per-point objective
    objective = hierarchical.objective(objective, FLAGS.k)
  step_options = dict(objective=objective, num_samples=FLAGS.k)
  if FLAGS.kl_warmup_epochs:
    step_options["beta"] = optax.linear_schedule(
        0.0, 1.0, FLAGS.kl_warmup_epochs * (train.shape[0] // bs))
  train_step = vae.jit_train_step(model, optimizer, **step_options)
  spc = FLAGS.steps_per_call
  if spc < 1:
    raise app.UsageError(f"--steps_per_call must be >= 1, got {spc}")
  multi_step = None if spc == 1 else vae.jit_multi_train_step(
      model, optimizer, unroll=FLAGS.scan_unroll, **step_options)
  results = {"flags": {name: FLAGS[name].value for name in (
      "dataset", "objective", "k", "time_budget_s", "epochs", "batch_size", "learning_rate",
      "adam_eps", "final_learning_rate", "latent_dim", "eval_k", "seed", "torch",
      "throughput_s", "throughput_rounds", "steps_per_call", "scan_unroll", "prior",
      "num_pseudo_inputs", "pseudo_input_init", "kl_warmup_epochs", "stochastic_layers",
      "latent_dim2", "ais_points", "ais_steps", "ais_chains", "ais_leapfrog", "ais_step_size",
      "ais_init", "load_params")},
             "num_parameters": int(sum(np.size(a) for a in jax.tree.leaves(state.params))),
             "jax_version": jax.__version__, "backend": jax.default_backend(),
             "cpu_count": os.cpu_count()}

  # --- throughput comparison -------------------------------------------------------------------
  if FLAGS.torch:
    import torch  # pylint: disable=g-import-not-at-top
    thread_counts = sorted({int(t) for t in (FLAGS.torch_threads or [1, os.cpu_count()])})
    num_batches = max(200, spc)
    batches = [b for b in epoch_data(train, FLAGS.dataset, rng)[:num_batches * bs].reshape(
        -1, bs, 784)]
    # each timed function: (label, step(batch) -> output to sync on, its batches, sync,
    # steps per call); all are timed in turns, --throughput_rounds times each
    timed = {}
    jax_state = [jax.tree_util.tree_map(jnp.copy, state)]

    def jax_step(xb):
      jax_state[0], metrics = train_step(jax_state[0], xb, step_key)
      return metrics["loss"]

    timed["lvmjax"] = ("lvmjax, 1 step per jitted call", jax_step, batches,
                       jax.block_until_ready, 1)
    if multi_step is not None:
      stacks = [np.stack(batches[i:i + spc]) for i in range(0, len(batches) - spc + 1, spc)]
      multi_state = [jax.tree_util.tree_map(jnp.copy, state)]

      def jax_multi_step(xs):
        multi_state[0], metrics = multi_step(multi_state[0], xs, step_key)
        return metrics["loss"]

      timed["lvmjax_multi"] = (f"lvmjax, {spc} steps per jitted call", jax_multi_step, stacks,
                               jax.block_until_ready, spc)
    for threads in thread_counts:
      torch.set_num_threads(threads)
      torch_step = make_torch_trainer(FLAGS.objective, FLAGS.k, FLAGS.latent_dim, hidden,
                                      FLAGS.learning_rate, FLAGS.adam_eps, FLAGS.seed)
      timed[f"torch_{threads}"] = (f"PyTorch {torch.__version__}, {threads} thread(s), eager",
                                   torch_step, batches, lambda out: out.item(), 1)
    if FLAGS.torch_compile:
      threads = os.cpu_count()
      torch.set_num_threads(threads)
      torch_step = make_torch_trainer(FLAGS.objective, FLAGS.k, FLAGS.latent_dim, hidden,
                                      FLAGS.learning_rate, FLAGS.adam_eps, FLAGS.seed,
                                      compile_=True)
      timed[f"torchcompile_{threads}"] = (
          f"PyTorch {torch.__version__}, {threads} thread(s), torch.compile (loss, gradient, "
          "Adam step)", torch_step, batches, lambda out: out.item(), 1)
    rounds = max(1, FLAGS.throughput_rounds)
    per_round = {name: [] for name in timed}
    for r in range(rounds):
      for name, (_, step, xs, sync, steps_per_call) in timed.items():
        if name.startswith("torch"):
          torch.set_num_threads(int(name.split("_")[1]))
        per_round[name].append(time_steps(step, xs, FLAGS.throughput_s / rounds, sync,
                                          steps_per_call, warm=r > 0))
    t_all = {}
    for name, runs in per_round.items():
      t = dict(runs[0])
      t["examples_per_s_rounds"] = [u["examples_per_s"] for u in runs]
      t["examples_per_s"] = float(np.median(t["examples_per_s_rounds"]))
      t["examples_per_cpu_s"] = float(np.median([u["examples_per_cpu_s"] for u in runs]))
      t["steps"] = sum(u["steps"] for u in runs)
      t["seconds"] = sum(u["seconds"] for u in runs)
      t_all[name] = t
    t_jax = t_all["lvmjax"]
    t_multi = t_all.get("lvmjax_multi")
    t_torch = {name.split("_")[1]: t for name, t in t_all.items() if name.startswith("torch_")}
    t_compiled = {name.split("_")[1]: t for name, t in t_all.items()
                  if name.startswith("torchcompile_")}
    for t in list(t_torch.values()) + list(t_compiled.values()):
      t["ratio"] = t_jax["examples_per_s"] / t["examples_per_s"]
      if t_multi is not None:
        t["ratio_multi"] = t_multi["examples_per_s"] / t["examples_per_s"]
    print(f"throughput (batch {bs}, {FLAGS.objective} k={FLAGS.k}, one Adam step per batch; "
          f"median of {rounds} interleaved rounds of {FLAGS.throughput_s / rounds:.0f} s):",
          flush=True)
    for name, t in t_all.items():
      first = "first call incl. compile" if name.startswith("lvmjax") else "first step"
      line = (f"  {timed[name][0]}: {t['examples_per_s']:.0f} examples/s, "
              f"{t['examples_per_cpu_s']:.0f} per CPU-second ({first} {t['first_step_s']:.2f} s; "
              f"rounds " + ", ".join(f"{v:.0f}" for v in t["examples_per_s_rounds"]) + ")")
      if name.startswith("torch"):
        line += f"; lvmjax / PyTorch = {t['ratio']:.2f}x"
        if t_multi is not None:
          line += f", with {spc} steps per call {t['ratio_multi']:.2f}x"
      print(line, flush=True)
    same = t_torch.get(str(os.cpu_count()), next(iter(t_torch.values())))
    best = max(t_torch.values(), key=lambda t: t["examples_per_s"])
    results["throughput"] = {"lvmjax": t_jax, "lvmjax_multi": t_multi, "torch": t_torch,
                             "torch_compile": t_compiled or None,
                             "batch_size": bs, "steps_per_call": spc, "rounds": rounds,
                             "torch_version": torch.__version__,
                             "ratio_same_threads": same["ratio"],
                             "ratio_vs_fastest_torch": best["ratio"]}
    if t_multi is not None:
      results["throughput"]["ratio_multi_same_threads"] = same["ratio_multi"]
      results["throughput"]["ratio_multi_vs_fastest_torch"] = best["ratio_multi"]
    del jax_state, timed

  # --- training ----------------------------------------------------------------------------------
  max_epochs = FLAGS.epochs if FLAGS.epochs is not None else 10 ** 9
  budget = FLAGS.time_budget_s if FLAGS.time_budget_s > 0 else math.inf
  train_results = {"epochs": 0, "steps": 0}
  if max_epochs > 0 and (budget < math.inf or FLAGS.epochs is not None):
    valid_elbo_fn = jax.jit(lambda p, k, x: jnp.mean(elbo_fn(model, p, k, x, 1)))
    t0 = time.perf_counter()
    state, m = train_step(state, train[:bs] if FLAGS.dataset == "static"
                          else (train[:bs] > 0.5).astype(np.uint8), step_key)
    jax.block_until_ready(m)
    multi_compiled = None  # compiled ahead, so that compiling it trains no step
    if multi_step is not None:
      multi_compiled = multi_step.lower(
          state, np.zeros((spc, bs, 784), np.uint8), step_key).compile()
    compile_s = time.perf_counter() - t0
    best = {"valid_elbo": -math.inf, "params": None, "epoch": 0}
    history = []
    steps, epoch, last_log = 1, 0, time.perf_counter()
    next_check = 100
    loss_sum, loss_n = 0.0, 0
    t_start = time.perf_counter()
    stop = False
    while epoch < max_epochs and not stop:
      if FLAGS.final_learning_rate is not None and budget < math.inf:
        frac = min((time.perf_counter() - t_start) / budget, 1.0)
        lr = FLAGS.learning_rate * (FLAGS.final_learning_rate / FLAGS.learning_rate) ** frac
        hyper = dict(state.opt_state.hyperparams)
        hyper["learning_rate"] = jnp.asarray(lr, hyper["learning_rate"].dtype)
        state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
      data = epoch_data(train, FLAGS.dataset, rng)
      num_batches, i = data.shape[0] // bs, 0
      while i < num_batches:  # stacks of spc batches per call while they last, then single steps
        if multi_compiled is not None and num_batches - i >= spc:
          xs = data[i * bs:(i + spc) * bs].reshape(spc, bs, -1)
          state, m = multi_compiled(state, xs, step_key)
          i, steps = i + spc, steps + spc
        else:
          state, m = train_step(state, data[i * bs:(i + 1) * bs], step_key)
          i, steps = i + 1, steps + 1
        if steps >= next_check:
          next_check += 100 * (1 + (steps - next_check) // 100)
          loss = float(np.asarray(m["loss"]).reshape(-1)[-1])
          if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss} at step {steps}")
          loss_sum, loss_n = loss_sum + loss, loss_n + 1
          now = time.perf_counter()
          if now - t_start >= budget:
            stop = True
            break
          if now - last_log >= FLAGS.log_every_s:
            lr_now = float(state.opt_state.hyperparams["learning_rate"])
            print(f"  epoch {epoch} step {steps} lr {lr_now:.2e} "
                  f"train loss {loss_sum / max(loss_n, 1):.2f} "
                  f"{(steps - 1) * bs / (now - t_start):.0f} examples/s "
                  f"elapsed {now - t_start:.0f} s", flush=True)
            history.append({"epoch": epoch, "step": steps, "train_loss": loss_sum / loss_n,
                            "elapsed_s": now - t_start})
            loss_sum, loss_n, last_log = 0.0, 0, now
      else:
        epoch += 1
      if valid is not None and (epoch % FLAGS.valid_every_epochs == 0 or stop):
        v = float(valid_elbo_fn(state.params, jax.random.fold_in(eval_key, epoch), valid))
        if v > best["valid_elbo"]:
          best = {"valid_elbo": v, "params": jax.device_get(state.params), "epoch": epoch}
        # a stop inside an epoch validates the partial epoch's params: label it by its step
        where = f"stopped at step {steps}, in epoch {epoch + 1}" if stop else f"epoch {epoch}"
        print(f"  {where}: valid ELBO {v:.2f} (best {best['valid_elbo']:.2f} at epoch "
              f"{best['epoch']})", flush=True)
    jax.block_until_ready(state)
    train_s = time.perf_counter() - t_start
    train_params = state.params if best["params"] is None else best["params"]
    train_results = {"epochs": epoch, "steps": steps, "train_s": train_s,
                     "compile_s": compile_s, "examples_per_s": (steps - 1) * bs / train_s,
                     "best_valid_elbo": best["valid_elbo"] if valid is not None else None,
                     "best_epoch": best["epoch"] if valid is not None else None,
                     "history": history}
    print(f"trained {epoch} epochs, {steps} steps in {train_s:.0f} s "
          f"({train_results['examples_per_s']:.0f} examples/s incl. data and validation; "
          f"compile {compile_s:.2f} s)", flush=True)
    results["train"] = train_results

  # --- evaluation --------------------------------------------------------------------------------
  params = None
  if "train" in results:
    params = train_params
  elif FLAGS.load_params:
    with open(FLAGS.load_params, "rb") as f:
      params = serialization.from_bytes(jax.device_get(state.params), f.read())
  if params is not None:
    if FLAGS.save_params:
      with open(FLAGS.save_params, "wb") as f:
        f.write(serialization.to_bytes(jax.device_get(params)))
    results["test"] = evaluate_test(model, params, eval_key, test, evaluate_fn, latent_dim)

  if "throughput" in results:
    t = results["throughput"]
    multi = t["lvmjax_multi"]
    print(f"examples/s: lvmjax {t['lvmjax']['examples_per_s']:.0f}"
          + (f", {spc} steps per jitted call {multi['examples_per_s']:.0f}" if multi else "")
          + "; PyTorch "
          + ", ".join(f"{n} thread(s) {v['examples_per_s']:.0f} ({v['ratio']:.2f}x"
                      + (f", {v['ratio_multi']:.2f}x" if multi else "") + ")"
                      for n, v in t["torch"].items())
          + f"; ratio at equal threads {t['ratio_same_threads']:.2f}x"
          + (f" ({t['ratio_multi_same_threads']:.2f}x with {spc} steps per call)" if multi else "")
          + f", against the fastest eager PyTorch setting {t['ratio_vs_fastest_torch']:.2f}x"
          + (f" ({t['ratio_multi_vs_fastest_torch']:.2f}x)" if multi else "")
          + "".join(f"; PyTorch torch.compile, {n} thread(s) {v['examples_per_s']:.0f} "
                    f"({v['ratio']:.2f}x" + (f", {v['ratio_multi']:.2f}x" if multi else "") + ")"
                    for n, v in (t["torch_compile"] or {}).items()), flush=True)
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w") as f:
      json.dump(results, f, indent=1, default=float)
    print(f"wrote {FLAGS.output_json}", flush=True)


if __name__ == "__main__":
  app.run(main)
