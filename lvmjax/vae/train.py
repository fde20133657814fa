"""Training and evaluating a VAE, IWAE or autoencoder as an experiment.

``train_and_evaluate(config, workdir)`` is what ``experiments/train_vae.py`` runs (config fields:
``configs/vae_digits.py``); ``evaluate_checkpoint(workdir, ...)`` is what
``experiments/evaluate_vae.py`` runs. Both are importable from tests and notebooks.

The loop: one ``jax.jit(train_step, donate_argnums=0)`` built by
:func:`lvmjax.vae.steps.make_train_step` (its randomness is ``fold_in(key, state.step)``);
deterministic shuffled batches from :class:`lvmjax.data.BatchIterator` (a fresh permutation per
epoch from ``config.seed``, dynamic binarization drawn from (seed, epoch, step)); every
``log_every`` steps the metrics are fetched, checked to be finite, shown and appended to
``metrics.jsonl``; every ``checkpoint_every`` steps and at the end an Orbax checkpoint holds the
train state (params, optimizer state, step), the RNG key, the data position and the config. A run
started on a workdir with a checkpoint resumes from it and, on the same machine, ends with exactly
the parameters of an uninterrupted run.

Several processes (``jax.distributed``): each process reads only its own block of the training
rows (:func:`load_data`) and draws ``batch_size / num_processes`` rows of every global batch from
it, in its own shuffled order; the step is data-parallel over the devices of all processes. So the
batches, and hence the trajectory, differ from a one-process run's (the same algorithm, not the
same numbers). The evaluation points are split too: each process reads its block of whole
evaluation batches and the sums are added over processes (:func:`lvmjax.vae.evaluate` with
``across_processes``), which gives the one-process figures; process 0 writes metrics, results and
figures (the figures from its own evaluation points).
"""
from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from lvmjax import checkpoint
from lvmjax import data
from lvmjax import distributed
from lvmjax import experiment
from lvmjax import gmm
from lvmjax import plotting
from lvmjax import progress
from lvmjax import sharding
from lvmjax import vae
from lvmjax.vae import hierarchical
from lvmjax.vae import model as vae_model
from lvmjax.vae import steps

MODELS = {"vae": "elbo", "iwae": "iwae", "ae": "autoencoder", "vade": "vade"}
#: ``config.prior`` (absent: ``"standard"``): N(0, I), the learnable Gaussian, the VampPrior, the
#: Gaussian mixture (``config.num_components``; always the prior of ``model="vade"``).
PRIORS = ("standard", "gaussian", "vamp", "mixture")
#: ``config.pseudo_input_init`` of the VampPrior (absent: ``"random"``): drawn from
#: N(0.05, 0.01^2) at init, or ``"data"``: random training points
#: (:func:`lvmjax.vae.pseudo_inputs_from_data`, the paper's "VampPrior data").
PSEUDO_INPUT_INITS = ("random", "data")
#: Config keys added after runs had been saved without them, with the value that reproduces those
#: runs. The launcher reads each through :func:`_later_key`, and a checkpoint saved without one
#: resumes under a config that holds this value (``experiment.check_resumable(defaults=)``).
LATER_KEYS = {"prior": "standard", "pseudo_input_init": "random", "learn_mixture_weights": True,
              "kl_warmup_epochs": 0, "gmm_init": "kmeans", "gmm_max_iter": 100,  # gmm.fit's
              "stochastic_layers": 1, "fit_all": False}
ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
LR_SCHEDULES = ("constant", "burda", "step_decay")
#: Environment variable: seconds to sleep after each training step. Only for testing fault
#: handling (it makes a tiny run slow enough to be killed mid-training); never set it otherwise.
STEP_DELAY_ENV = "LVMJAX_DEBUG_STEP_DELAY"


class VAERun(NamedTuple):
  """What :func:`train_and_evaluate` returns.

  Attributes:
    model: the :class:`lvmjax.vae.VAE` module.
    state: the final :class:`lvmjax.vae.TrainState` (``state.params`` are the parameters).
    results: the numbers written to ``results.json``.
    data_shape: shape of one input as the model sees it, e.g. (784,) or (28, 28, 1).
  """
  model: vae.VAE
  state: steps.TrainState
  results: dict
  data_shape: tuple[int, ...]


def validate_config(config: Any) -> None:
  """Raises ValueError for a config that cannot run (checked before any data is read)."""
  data.check_dataset_name(config.dataset)
  experiment.check_choice(config, "model", tuple(MODELS))
  experiment.check_choice(config, "architecture", ARCHITECTURES)
  experiment.check_choice(config, "likelihood", LIKELIHOODS)
  experiment.check_choice(config, "lr_schedule", LR_SCHEDULES)
  experiment.check_positive_ints(config, ["latent_dim", "batch_size", "num_samples", "log_every",
                                          "checkpoint_every", "max_to_keep", "eval_batch_size"])
  experiment.check_positive_ints(config, ["num_steps", "num_epochs", "eval_every",
                                          "num_importance_samples", "num_eval_points",
                                          "num_train_points"], minimum=0)
  experiment.check_positive_floats(config, ["learning_rate", "adam_eps"])
  experiment.check_positive_floats(config, ["beta", "gaussian_scale"], allow_zero=True)
  later = {key: _later_key(config, key) for key in LATER_KEYS}
  experiment.check_positive_ints(later, ["kl_warmup_epochs"], minimum=0)
  experiment.check_bools(later, ["learn_mixture_weights", "fit_all"])
  for h in config.hidden:
    experiment.check_positive_ints({"hidden": h}, ["hidden"])
  for k in config.iwae_k:
    experiment.check_positive_ints({"iwae_k": k}, ["iwae_k"])
  if config.num_steps == 0 and config.num_epochs == 0:
    raise ValueError("Set config.num_steps or config.num_epochs (> 0) to say how long to train.")
  if config.architecture == "conv" and config.dataset not in (
      "binarized_mnist", "mnist", "dynamic_mnist", "fashion_mnist"):
    raise ValueError(f"config.architecture='conv' needs 28x28 images; dataset {config.dataset!r} "
                     "is not. Use architecture='mlp'.")
  experiment.check_choice({"prior": _prior_name(config)}, "prior", PRIORS)
  if _prior_name(config) == "mixture" or config.model == "vade":
    experiment.check_positive_ints(config, ["num_components"])
  if _prior_name(config) == "vamp":
    experiment.check_positive_ints(config, ["num_pseudo_inputs"])
    experiment.check_choice(later, "pseudo_input_init", PSEUDO_INPUT_INITS)
    if later["pseudo_input_init"] == "data" and jax.process_count() > 1:
      raise ValueError("config.pseudo_input_init='data' draws the pseudo-inputs from the training "
                       "points of one process; run it in one process or use 'random'.")
  if config.model == "vade":
    experiment.check_positive_ints(config, ["pretrain_epochs", "gmm_n_init"], minimum=0)
    experiment.check_positive_ints(later, ["gmm_max_iter"], minimum=0)
    experiment.check_positive_floats(config, ["pretrain_learning_rate"])
  if config.lr_schedule == "step_decay":
    experiment.check_positive_ints(config, ["lr_decay_epochs"])
    experiment.check_positive_floats(config, ["lr_decay_rate", "min_learning_rate"])
  if _later_key(config, "fit_all") and jax.process_count() > 1:
    raise ValueError("config.fit_all (train and evaluate on all splits) runs in one process.")
  if config.compute_dtype not in ("float32", "bfloat16"):
    raise ValueError(f"config.compute_dtype must be 'float32' or 'bfloat16', got "
                     f"{config.compute_dtype!r}.")
  _validate_layers(config)


def _layers(config: Any) -> int:
  return int(_later_key(config, "stochastic_layers"))


def _validate_layers(config: Any) -> None:
  """config.stochastic_layers = 2: the two-layer model of :mod:`lvmjax.vae.hierarchical`."""
  if _layers(config) not in (1, 2):
    raise ValueError(f"config.stochastic_layers must be 1 or 2, got {_layers(config)}.")
  if _layers(config) == 2:
    if (config.model not in ("vae", "iwae") or config.architecture != "mlp"
        or _prior_name(config) != "standard"):
      raise ValueError("config.stochastic_layers=2 (lvmjax.vae.hierarchical) trains model='vae' "
                       "or 'iwae' with architecture='mlp' and the standard normal prior.")
    experiment.check_positive_ints(config, ["latent_dim2"])
    for h in config.hidden2:
      experiment.check_positive_ints({"hidden2": h}, ["hidden2"])


def build_model(config: Any, num_features: int) -> vae.VAE:
  """The VAE module the config describes (encoder, decoder, likelihood).

  With ``config.stochastic_layers == 2``: :func:`lvmjax.vae.hierarchical.burda_model` with z1 of
  ``latent_dim``, z2 of ``latent_dim2`` units and hidden widths ``hidden`` / ``hidden2``.
  """
  if _layers(config) == 2:
    return hierarchical.burda_model(
        num_features, latent_dims=(config.latent_dim, config.latent_dim2),
        hidden=(tuple(int(h) for h in config.hidden), tuple(int(h) for h in config.hidden2)),
        activation=config.activation,
        likelihood=(vae.BernoulliLikelihood() if config.likelihood == "bernoulli" else
                    vae.GaussianLikelihood(scale=config.gaussian_scale or None)))
  if config.architecture == "mlp":
    hidden = tuple(int(h) for h in config.hidden)
    encoder = vae.MLPEncoder(latent_dim=config.latent_dim, hidden=hidden,
                             activation=config.activation)
    decoder = vae.MLPDecoder(output_dim=num_features, hidden=tuple(reversed(hidden)),
                             activation=config.activation)
  else:
    encoder = vae.ConvEncoder(latent_dim=config.latent_dim)
    decoder = vae.ConvDecoder()
  if config.likelihood == "bernoulli":
    likelihood = vae.BernoulliLikelihood()
  else:
    likelihood = vae.GaussianLikelihood(scale=config.gaussian_scale or None)
  return vae.VAE(encoder, decoder, likelihood, prior=build_prior(config, num_features))


def _later_key(config: Any, key: str) -> Any:
  """``config[key]``, or for a config from before the key, the value of :data:`LATER_KEYS`."""
  return config.get(key, LATER_KEYS[key])


def _prior_name(config: Any) -> str:
  return "mixture" if config.model == "vade" else _later_key(config, "prior")


def build_prior(config: Any, num_features: int) -> vae.Prior | None:
  """The prior ``config.prior`` names (None: the standard normal); the mixture for VaDE."""
  name = _prior_name(config)
  if name == "gaussian":
    return vae.GaussianPrior()
  if name == "mixture":
    return vae.GaussianMixturePrior(num_components=int(config.num_components),
                                    learn_weights=_later_key(config, "learn_mixture_weights"))
  if name == "vamp":
    shape = (28, 28, 1) if config.architecture == "conv" else (num_features,)
    return vae.VampPrior(num_pseudo_inputs=int(config.num_pseudo_inputs), data_shape=shape)
  return None


def build_optimizer(config: Any, steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam with the configured learning rate schedule.

  ``"burda"`` is the schedule of Burda, Grosse & Salakhutdinov (2015): 3^i epochs at learning
  rate ``lr * 10^(-i/7)`` for i = 0, 1, ..., 7 (3280 epochs in all), constant afterwards.
  ``"step_decay"`` (VaDE's) multiplies the rate by ``config.lr_decay_rate`` every
  ``config.lr_decay_epochs`` epochs, down to ``config.min_learning_rate``.
  """
  if config.lr_schedule == "constant":
    lr = config.learning_rate
  elif config.lr_schedule == "step_decay":  # VaDE's: x lr_decay_rate every lr_decay_epochs
    lr = optax.exponential_decay(
        config.learning_rate, int(config.lr_decay_epochs) * steps_per_epoch,
        config.lr_decay_rate, staircase=True,
        end_value=min(config.min_learning_rate, config.learning_rate))
  else:
    boundaries, epochs = {}, 0
    for i in range(7):  # after stage i (3^i epochs) the rate drops by 10^(-1/7)
      epochs += 3 ** i
      boundaries[epochs * steps_per_epoch] = 10 ** (-1 / 7)
    lr = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  return optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)


def data_shape_of(config: Any, dataset: data.Dataset) -> tuple[int, ...]:
  """Shape of one input for the model: flat (D,) for MLPs, (H, W, 1) for convolutions."""
  if config.architecture == "conv":
    return tuple(dataset.image_shape) + (1,)
  return (dataset.num_features,)


class _Data(NamedTuple):
  train: data.Dataset
  eval_x: np.ndarray
  eval_y: np.ndarray | None
  image_shape: tuple[int, ...] | None
  num_train_points: int  # of all processes together (train.x holds this process's rows)
  eval_first_batch: int = 0  # global index of eval_x's first evaluation batch


def load_data(config: Any) -> _Data:
  """The training split and the evaluation points (binarized once when training is dynamic).

  With several processes (``jax.process_count() > 1``) ``train`` holds only this process's block
  of the training rows (:func:`lvmjax.sharding.process_share`), read from the file without
  loading the rest; ``num_train_points`` counts the rows of all processes. Likewise each process
  reads only its block of whole evaluation batches (``config.eval_batch_size`` points each);
  ``eval_first_batch`` is the global index of its first batch.
  """
  kwargs = dict(data_dir=config.data_dir or None)
  if config.dataset == "synthetic_gmm":
    kwargs["synthetic_options"] = config.synthetic.to_dict()
  if _later_key(config, "fit_all"):
    return _load_all(config, kwargs)
  train, num_train = data.load_process_share(config.dataset, "train",
                                             subset=config.num_train_points,
                                             subset_seed=[config.seed, 7], multiple=1, **kwargs)
  if config.dynamic_binarization:
    train = train._replace(binarize=True)
  split = config.eval_split
  if split not in data.SPLITS[config.dataset]:
    raise ValueError(f"config.eval_split={split!r}: dataset {config.dataset!r} has splits "
                     f"{data.SPLITS[config.dataset]}.")
  # A fixed random subset of num_eval_points: binarized MNIST's test split is sorted by class.
  num_eval_rows = data.num_rows(config.dataset, split, **kwargs)
  eval_rows = data.random_subset(num_eval_rows, config.num_eval_points, [config.seed, 11])
  first_batch, first_row = 0, 0
  if jax.process_count() > 1:
    num_eval = num_eval_rows if eval_rows is None else len(eval_rows)
    bs = config.eval_batch_size
    batches = sharding.process_rows(-(-num_eval // bs), multiple=1)
    first_batch, first_row = batches.start, min(batches.start * bs, num_eval)
    mine = slice(first_row, min(batches.stop * bs, num_eval))
    eval_rows = mine if eval_rows is None else eval_rows[mine]
    if mine.stop <= mine.start:
      raise ValueError(f"{num_eval} evaluation points make fewer than one batch of "
                       f"config.eval_batch_size={bs} per process ({jax.process_count()} processes); "
                       "lower config.eval_batch_size or evaluate on more points.")
  test = data.load_dataset(config.dataset, split, rows=eval_rows, **kwargs)
  x, y = test.x, test.y
  if train.binarize:
    x = data.binarize_once(x, config.seed, first_row=first_row)
  return _Data(train, x, y, train.image_shape, num_train, first_batch)


def _load_all(config: Any, kwargs: dict) -> _Data:
  """``config.fit_all``: every split together for training and evaluation (one process).

  Clustering is unsupervised, and the VaDE and DEC papers train and score on all 70,000 MNIST
  digits; the labels are used only for the score. ``num_train_points`` / ``num_eval_points``
  take fixed random subsets of the union.
  """
  parts = [data.load_dataset(config.dataset, s, **kwargs)
           for s in data.SPLITS[config.dataset] if s not in ("all", "valid", "validation")]
  x = np.concatenate([p.x for p in parts])
  y = None if any(p.y is None for p in parts) else np.concatenate([p.y for p in parts])
  rows = data.random_subset(len(x), config.num_train_points, [config.seed, 7])
  train = parts[0]._replace(x=x if rows is None else x[rows],
                            y=y if (rows is None or y is None) else y[rows])
  if config.dynamic_binarization:
    train = train._replace(binarize=True)
  rows = data.random_subset(len(x), config.num_eval_points, [config.seed, 11])
  ex, ey = (x, y) if rows is None else (x[rows], None if y is None else y[rows])
  if train.binarize:
    ex = data.binarize_once(ex, config.seed)
  return _Data(train, ex, ey, train.image_shape, train.num_points)


def _reshape(x: np.ndarray, data_shape: tuple[int, ...]) -> np.ndarray:
  return x.reshape((x.shape[0],) + tuple(data_shape))


def _num_steps(config: Any, steps_per_epoch: int) -> int:
  return int(config.num_steps) if config.num_steps else int(config.num_epochs) * steps_per_epoch


def _finite_tree(tree: Any) -> bool:
  return bool(jax.device_get(jnp.all(jnp.stack(
      [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)
       if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)]))))


def _compute_dtype(config: Any):
  return jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32


def train_and_evaluate(config: Any, workdir: str | pathlib.Path, *,
                       quiet: bool = False) -> VAERun:
  """Trains the model ``config`` describes, evaluates it and writes everything to ``workdir``.

  Writes ``config.json``; ``metrics.jsonl`` (every ``log_every`` steps: ``loss``, ``objective``,
  ``grad_norm``, ``reconstruction``/``kl`` for the VAE, ``steps_per_second``; every
  ``eval_every`` steps: ``eval_elbo``); ``checkpoints/``; ``results.json`` (evaluation: ELBO,
  log-likelihood with ``num_importance_samples`` samples, IWAE bounds, active units) and the
  figures ``vae_samples.png``, ``vae_reconstructions.png``, ``vae_latent_space.png``,
  ``vae_interpolation.png`` and ``vae_training_curves.png`` (the two-layer model: no
  interpolation, and ``vae_latent_space_z1.png`` beside z2's ``vae_latent_space.png``).

  Args:
    config: an ``ml_collections.ConfigDict`` like ``configs/vae_digits.py``'s.
    workdir: the run's directory; a checkpoint of the same config in it is resumed.
    quiet: no progress display.

  Returns:
    A :class:`VAERun`.

  Raises:
    ValueError: a bad config (unknown dataset, non-positive learning rate or sizes, ...), missing
      data files, or a workdir holding a different run.
    experiment.NonFiniteLossError: the loss became NaN or infinite (the message names the step;
      the last good checkpoint is kept).
  """
  validate_config(config)
  workdir = experiment.prepare_workdir(workdir)
  primary = distributed.is_primary()
  d = load_data(config)
  train = d.train
  data_shape = data_shape_of(config, train)
  batches_per_epoch = data.steps_per_epoch(d.num_train_points, config.batch_size)
  if batches_per_epoch == 0:
    raise ValueError(f"config.batch_size={config.batch_size} is larger than the training set "
                     f"({d.num_train_points} points).")
  num_steps = _num_steps(config, batches_per_epoch)
  model = build_model(config, train.num_features)
  optimizer = build_optimizer(config, batches_per_epoch)
  init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
  example = jnp.asarray(_reshape(train.x[:1], data_shape))
  state = steps.create_train_state(init_key, model, example, optimizer)

  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.max_to_keep)
  writer = progress.MetricsWriter(workdir, enabled=primary)
  try:
    meta = experiment.check_resumable(ckpt, config, workdir, defaults=LATER_KEYS)
    position = (0, 0)
    if meta is not None:
      restored, meta = ckpt.restore({"train_state": state,
                                     "key": jax.random.key_data(train_key)})
      state = restored["train_state"]
      train_key = jax.random.wrap_key_data(restored["key"])
      position = tuple(meta["position"])
      writer.truncate_after(int(state.step))
      logging.info("Resuming from step %d (epoch %d, batch %d) in %s.", int(state.step),
                   position[0], position[1], ckpt.directory)
    else:
      writer.truncate_after(None)
      if _prior_name(config) == "vamp" and _later_key(config, "pseudo_input_init") == "data":
        state = steps.TrainState(state.step, vae.pseudo_inputs_from_data(
            model, state.params, jax.random.fold_in(init_key, 2), _reshape(train.x, data_shape)),
                                 state.opt_state)
    if primary:
      progress.write_config_json(workdir, config)
    if config.model == "vade" and meta is None:
      # The paper's initialisation, before step 0: an autoencoder, then a GMM on its codes; saved
      # as checkpoint 0, so that a resumed run does not pretrain again.
      state = _pretrain_vade(config, model, state, optimizer, train, data_shape,
                             jax.random.fold_in(init_key, 1), workdir if primary else None,
                             quiet or not primary)
      ckpt.save(0, {"train_state": state, "key": jax.random.key_data(train_key)},
                {"config": config, "position": [0, 0], "step": 0})
    state = _train_loop(config, model, optimizer, state, train, data_shape, num_steps, position,
                        train_key, eval_key, d, ckpt, writer, quiet or not primary)
    ckpt.wait_until_finished()
  finally:
    ckpt.close()

  results = _evaluate(config, model, state.params, eval_key, d.eval_x, data_shape,
                      num_importance_samples=config.num_importance_samples,
                      quiet=quiet or not primary, first_batch=d.eval_first_batch)
  results.update(step=int(state.step), epochs=int(state.step) / batches_per_epoch,
                 num_parameters=int(sum(np.size(a) for a in jax.tree.leaves(state.params))))
  if config.model == "vade":
    results.update(evaluate_clustering(model, state.params, jax.random.fold_in(eval_key, 2),
                                       _reshape(d.eval_x, data_shape), d.eval_y,
                                       config.eval_batch_size))
    pretrain_info = workdir / "pretrain.json"
    if pretrain_info.exists():
      results["pretrain"] = json.loads(pretrain_info.read_text())
  if primary:
    experiment.write_results(workdir, results)
    if config.figures:
      write_figures(workdir, config, model, state.params, d, data_shape,
                    jax.random.fold_in(eval_key, 1))
      if config.model == "vade" and d.image_shape is not None:
        write_cluster_figure(workdir, model, state.params, d.image_shape,
                             jax.random.fold_in(eval_key, 3))
  return VAERun(model, state, results, data_shape)


def _train_loop(config, model, optimizer, state, train, data_shape, num_steps, position,
                train_key, eval_key, d, ckpt, writer, quiet):
  """The training loop proper (see :func:`train_and_evaluate`)."""
  step_kwargs = dict(objective=MODELS[config.model], num_samples=config.num_samples,
                     beta=_beta(config, d.num_train_points), compute_dtype=_compute_dtype(config))
  if _layers(config) == 2:
    step_kwargs["objective"] = hierarchical.objective(MODELS[config.model], config.num_samples)
  to_device, mesh = jnp.asarray, None
  if sharding.spread_devices():
    # Data-parallel over all devices (of all hosts): batch split, state replicated, gradients
    # averaged by XLA.
    mesh = sharding.data_mesh()
    steps.check_batch_size(config.batch_size, mesh)
    train_step = steps.make_parallel_train_step(model, optimizer, mesh, **step_kwargs)
    state, train_key = steps.replicate(jax.device_get((state, train_key)), mesh)
    # Several processes: each sends its own share of every global batch to its devices.
    local = jax.process_count() > 1
    to_device = lambda xb: steps.shard_batch(xb, mesh, local=local)  # pylint: disable=unnecessary-lambda-assignment
  else:
    train_step = steps.jit_train_step(model, optimizer, **step_kwargs)
  step = int(state.step)
  batch_size, seed = config.batch_size, config.seed
  if jax.process_count() > 1:
    # Each process draws its share of every global batch from its own rows, in its own shuffled
    # order (seeded by seed and process), and sends it to its devices; the position follows
    # from the step. Statistically the same training as one process, not the same batches.
    batch_size, seed, position = _local_batches(config, d.num_train_points, step)
  batches = data.BatchIterator(train.x, batch_size, seed=seed, binarize=train.binarize,
                               position=position)
  bar = progress.Progress(num_steps, initial=step, desc=config.model, quiet=quiet)
  delay = float(os.environ.get(STEP_DELAY_ENV, "0") or 0)
  last_finite = step if step else None
  t_log, step_log = None, step
  while step < num_steps:
    batch = next(batches)
    state, metrics = train_step(state, to_device(_reshape(batch.x, data_shape)), train_key)
    step += 1
    if delay:
      time.sleep(delay)
    eval_now = bool(config.eval_every) and (step % config.eval_every == 0 or step == num_steps)
    log_now = step % config.log_every == 0 or step == num_steps or eval_now
    save_now = step % config.checkpoint_every == 0 or step == num_steps
    if log_now or save_now:
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
        ckpt.wait_until_finished()
        raise experiment.NonFiniteLossError(experiment.non_finite_message(
            "The training loss", m["loss"], step, last_finite, ckpt,
            "Lower config.learning_rate (or check the data for NaNs)."))
      last_finite = step
      if save_now:
        if not _finite_tree(state.params):
          ckpt.wait_until_finished()
          raise experiment.NonFiniteLossError(experiment.non_finite_message(
              "A parameter", "NaN or infinite", step, last_finite, ckpt,
              "Lower config.learning_rate."))
        ckpt.save(step, {"train_state": state, "key": jax.random.key_data(train_key)},
                  {"config": config, "position": list(batches.position), "step": step})
      if log_now:
        now = time.perf_counter()
        if t_log is not None:
          m["steps_per_second"] = (step - step_log) / max(now - t_log, 1e-9)
        t_log, step_log = now, step
        m["epoch"] = batch.epoch + (batch.step + 1) / batches.steps_per_epoch
        if eval_now:
          params = state.params if mesh is None else jax.device_get(state.params)
          ev = _evaluate_fn(model)(model, params, jax.random.fold_in(eval_key, step),
                                 _reshape(d.eval_x, data_shape), config.eval_batch_size,
                                 num_samples_ll=0, first_batch=d.eval_first_batch,
                                 across_processes=True)
          m["eval_elbo"] = ev["elbo"]
          m["eval_active_units"] = ev["active_units"]
        writer.write(step, m)
        bar.update(step, {k: m[k] for k in ("loss", "eval_elbo") if k in m})
      else:
        bar.update(step)
    else:
      bar.update(step)
  bar.close()
  if mesh is not None:  # hand back an ordinary (one-device) state, as on one device
    state = jax.tree.map(jnp.asarray, jax.device_get(state))
  return state


def _local_batches(config: Any, num_points: int, step: int) -> tuple[int, int, data.Position]:
  """(rows per batch, shuffling seed, position) of this process's share of the global batches."""
  count, index = jax.process_count(), jax.process_index()
  if config.batch_size % count:
    raise ValueError(f"config.batch_size={config.batch_size} must be a multiple of the {count} "
                     "processes (each draws an equal share of every batch).")
  batch_size = config.batch_size // count
  smallest = min(len(range(num_points)[sharding.process_rows(num_points, p, count)])
                 for p in range(count))
  if smallest < batch_size:
    raise ValueError(f"With {count} processes each holds at least {smallest} training points, "
                     f"fewer than its {batch_size} rows of every batch of {config.batch_size}; "
                     "lower config.batch_size or use fewer processes.")
  seed = int(np.random.SeedSequence([config.seed, index]).generate_state(1)[0])
  mine = len(range(num_points)[sharding.process_rows(num_points, index, count)])
  return batch_size, seed, data.position_of(step, mine, batch_size)


def _beta(config: Any, num_train_points: int):
  """config.beta, or a linear KL warm-up from 0 over config.kl_warmup_epochs (counted in steps)."""
  epochs = int(_later_key(config, "kl_warmup_epochs"))
  if epochs == 0:
    return config.beta
  steps_per_epoch = data.steps_per_epoch(num_train_points, config.batch_size)
  return optax.linear_schedule(0.0, config.beta, epochs * steps_per_epoch)


def _evaluate(config: Any, model: vae.VAE, params: Any, key: jax.Array, x: np.ndarray,
              data_shape: tuple[int, ...], *, num_importance_samples: int, quiet: bool = True,
              first_batch: int = 0) -> dict:
  """:func:`lvmjax.vae.evaluate` with the config's options, a progress bar and its time.

  With several processes, ``x`` is this process's block of whole evaluation batches, starting at
  global batch ``first_batch`` (:func:`load_data`), and the figures are those of all processes'
  points together. For the autoencoder (``config.model == "ae"``) the figures are its
  reconstruction log-likelihood and active units.
  """
  autoencoder = config.model == "ae"
  t0 = time.perf_counter()
  bar = progress.Progress(len(x), desc=f"evaluate (k={num_importance_samples})",
                          quiet=quiet or autoencoder)
  results = _evaluate_fn(model)(
      model, params, key, _reshape(np.asarray(x), data_shape), config.eval_batch_size,
      num_samples_ll=num_importance_samples, iwae_k=tuple(int(k) for k in config.iwae_k),
      progress=lambda done, total: bar.update(done), first_batch=first_batch,
      across_processes=True, autoencoder=autoencoder)
  bar.close()
  if not autoencoder:
    results["num_importance_samples"] = int(num_importance_samples)
  results["eval_seconds"] = time.perf_counter() - t0
  results["eval_split"] = config.eval_split
  return results


def _evaluate_fn(model: Any):
  """:func:`lvmjax.vae.evaluate`, or the two-layer model's :func:`~lvmjax.vae.hierarchical.evaluate`."""
  if isinstance(model, hierarchical.HierarchicalVAE):
    return hierarchical.evaluate
  return steps.evaluate


def write_figures(workdir: pathlib.Path, config: Any, model: vae.VAE, params: Any, d: _Data,
                  data_shape: tuple[int, ...], key: jax.Array,
                  prefix: str = "vae_") -> list[pathlib.Path]:
  """Prior samples, reconstructions, latent space, interpolations and training curves as PNGs.

  The two-layer model draws its samples through p(z2) p(z1 | z2), reconstructs through the mean
  of q(z1 | x) and plots the posterior means of both layers (``{prefix}latent_space.png`` for z2,
  ``{prefix}latent_space_z1.png``); it has no interpolation strip.
  """
  paths = []
  two_layers = isinstance(model, hierarchical.HierarchicalVAE)
  xs = _reshape(d.eval_x, data_shape)
  image_shape = d.image_shape
  if image_shape is not None:
    if two_layers:
      samples, _ = hierarchical.sample_joint(model, params, key, 100, use_mean=True)
      what = "p(x|z1) for z2 ~ p(z2), z1 ~ p(z1|z2)"
    else:
      samples, _ = vae.sample(model, params, key, 100, use_mean=True)
      what = "p(x|z) for z ~ p(z)"
    paths.append(plotting.save_figure(plotting.plot_image_grid(
        np.asarray(samples).reshape(100, -1), image_shape, 10,
        title=f"{config.model.upper()}: means of {what}"),
        workdir / f"{prefix}samples.png"))
    n = min(20, len(xs))
    rec = np.asarray((hierarchical if two_layers else vae).reconstruct(model, params, xs[:n]))
    paths.append(plotting.save_figure(plotting.plot_reconstructions(
        d.eval_x[:n], rec.reshape(n, -1), image_shape), workdir / f"{prefix}reconstructions.png"))
    pairs = 0 if two_layers else min(4, len(xs) // 2)
    strips = [np.asarray(vae.interpolate(model, params, xs[2 * i], xs[2 * i + 1], 10)).reshape(10, -1)
              for i in range(pairs)]
    if strips:
      paths.append(plotting.save_figure(plotting.plot_interpolation(np.stack(strips), image_shape),
                                        workdir / f"{prefix}interpolation.png"))
  m = min(2000, len(xs))
  if two_layers:
    m1, m2 = hierarchical.posterior_means(model, params, jax.random.fold_in(key, 1), xs[:m])
    latents = [(m2, "z2", "latent_space"), (m1, "z1", "latent_space_z1")]
  else:
    latents = [(vae.encode(model, params, xs[:m])[0], "z", "latent_space")]
  for mean, name, stem in latents:
    dim = np.shape(mean)[-1]
    paths.append(plotting.save_figure(plotting.plot_latent_space(
        np.asarray(mean), None if d.eval_y is None else d.eval_y[:m],
        class_names=plotting.class_names(config.dataset),
        title=f"Posterior means of {m} {config.eval_split} points"
        + (f", {name}" if two_layers else "") + ("" if dim <= 2 else f" ({dim}-D, PCA projection)"),
        name=name), workdir / f"{prefix}{stem}.png"))
  records = progress.read_metrics(workdir)
  if records:
    keys = [k for k in ("loss", "reconstruction", "kl", "eval_elbo", "grad_norm")
            if any(k in r for r in records)]
    paths.append(plotting.save_figure(plotting.plot_training_curves(
        records, keys, title=f"{config.model.upper()} on {config.dataset}"),
        workdir / f"{prefix}training_curves.png"))
  return paths


def restore_run(workdir: str | pathlib.Path, step: int | None = None, *,
                overrides: dict | None = None) -> tuple[Any, vae.VAE, steps.TrainState, _Data]:
  """Rebuilds a training run from its workdir: config, model, train state and data.

  Args:
    workdir: a ``train_vae`` run's directory.
    step: the checkpoint to load; None for the latest.
    overrides: config fields to change first (e.g. ``{"num_eval_points": 1000}``).

  Returns:
    ``(config, model, state, data)``: ``state.params`` are the checkpointed parameters.

  Raises:
    ValueError: no checkpoint in ``workdir``.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).expanduser().absolute()
  if not (workdir / "checkpoints").is_dir():
    raise ValueError(f"No checkpoints in {workdir}: give the --workdir of a train_vae run.")
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)  # the run may still be training
  try:
    meta = ckpt.restore_meta(step)
    if meta is None:
      raise ValueError(f"No checkpoint in {workdir / 'checkpoints'}.")
    config = ml_collections.ConfigDict(meta["config"])
    for k, v in (overrides or {}).items():
      config[k] = v
    validate_config(config)
    d = load_data(config)
    data_shape = data_shape_of(config, d.train)
    model = build_model(config, d.train.num_features)
    optimizer = build_optimizer(config, data.steps_per_epoch(d.num_train_points,
                                                             config.batch_size))
    init_key, train_key, _ = jax.random.split(jax.random.key(config.seed), 3)
    template = steps.create_train_state(
        init_key, model, jnp.asarray(_reshape(d.train.x[:1], data_shape)), optimizer)
    restored, _ = ckpt.restore({"train_state": template,
                                "key": jax.random.key_data(train_key)}, step)
  finally:
    ckpt.close()
  return config, model, restored["train_state"], d


def evaluate_checkpoint(workdir: str | pathlib.Path, *, num_importance_samples: int = 5000,
                        num_eval_points: int | None = None, eval_batch_size: int | None = None,
                        step: int | None = None, figures: bool = True,
                        quiet: bool = False, estimator: str = "is",
                        ais_options: dict | None = None) -> dict:
  """Loads a checkpoint from a training workdir and evaluates it (the k=5000 log-likelihood).

  Reads the config stored with the checkpoint, rebuilds the model, restores the parameters and
  writes ``eval_<step>_k<k>.json`` (``eval_<step>_k<k>_ais<T>.json`` with AIS) and figures
  ``eval_*.png`` in ``<workdir>/evaluation``. With ``estimator="ais"`` the results also hold
  :func:`lvmjax.vae.ais.evaluate_ais`'s AIS log-likelihood (``log_likelihood_ais``, ``nll_ais``)
  on the same points.

  Args:
    workdir: the training run's directory.
    num_importance_samples: k for the importance-sampled log p(x) (5000 in Burda et al.).
    num_eval_points: evaluate on this many points (a fixed random subset); None: the config's
      value (0 = the whole split).
    eval_batch_size: points per jitted batch; None: the config's value.
    step: which checkpoint; None for the latest.
    figures: write the figures.
    quiet: no progress display.
    estimator: ``"is"`` (importance sampling only) or ``"ais"`` (AIS as well).
    ais_options: keyword arguments of :func:`lvmjax.vae.log_likelihood_ais` (``num_steps``,
      ``num_chains``, ``num_leapfrog``, ``init``, ...).

  Returns:
    The results dict (also written as JSON).

  Raises:
    ValueError: no checkpoint in ``workdir``.
  """
  if num_importance_samples < 0:
    raise ValueError(f"num_importance_samples must be >= 0, got {num_importance_samples}.")
  if estimator not in ("is", "ais"):
    raise ValueError(f"estimator must be 'is' or 'ais', got {estimator!r}.")
  ais_options = dict(ais_options or {})
  if estimator == "ais":
    vae.ais.make_options(**{k: v for k, v in ais_options.items() if k != "init"})
    if jax.process_count() > 1:
      raise ValueError("estimator='ais' runs in one process.")
  workdir = pathlib.Path(workdir).expanduser().absolute()
  overrides = {"num_importance_samples": int(num_importance_samples)}
  if num_eval_points is not None:
    overrides["num_eval_points"] = int(num_eval_points)
  if eval_batch_size is not None:
    overrides["eval_batch_size"] = int(eval_batch_size)
  config, model, state, d = restore_run(workdir, step, overrides=overrides)
  data_shape = data_shape_of(config, d.train)
  eval_key = jax.random.split(jax.random.key(config.seed), 3)[2]
  results = _evaluate(config, model, state.params, eval_key, d.eval_x, data_shape,
                      num_importance_samples=num_importance_samples,
                      quiet=quiet or not distributed.is_primary(),
                      first_batch=d.eval_first_batch)
  name = f"eval_{int(state.step)}_k{num_importance_samples}"
  if estimator == "ais":
    t0 = time.perf_counter()
    bar = progress.Progress(len(d.eval_x), desc="evaluate (AIS)", quiet=quiet)
    ais_results = vae.ais.evaluate_ais(
        model, state.params, jax.random.fold_in(eval_key, 7), _reshape(d.eval_x, data_shape),
        config.eval_batch_size, progress=lambda done, total: bar.update(done), **ais_options)
    bar.close()
    ais_results.pop("num_points")
    results.update(ais_results, ais_seconds=time.perf_counter() - t0)
    name += f"_ais{ais_options.get('num_steps', vae.ais.AISOptions().num_steps)}"
  results["step"] = int(state.step)
  out = workdir / "evaluation"
  if distributed.is_primary():
    experiment.write_results(out, results, f"{name}.json")
    if figures:
      write_figures(out, config, model, state.params, d, data_shape,
                    jax.random.fold_in(eval_key, 1), prefix="eval_")
  return results


# ----------------------------------------------------------------------------------------------
# VaDE: pretraining, clustering figures


def _pretrain_vade(config: Any, model: vae.VAE, state: steps.TrainState,
                   optimizer: optax.GradientTransformation, train: data.Dataset,
                   data_shape: tuple[int, ...], key: jax.Array, workdir: pathlib.Path | None,
                   quiet: bool) -> steps.TrainState:
  """VaDE's initialisation (Jiang et al., 2017): train the networks as an autoencoder for
  ``config.pretrain_epochs`` epochs (``objective="autoencoder"``, Adam at
  ``config.pretrain_learning_rate``), then fit a diagonal GMM to the encoder means of the training
  points (:func:`lvmjax.vae.vade.init_prior_from_data`, ``config.gmm_n_init`` restarts from
  ``config.gmm_init``, by default ``"kmeans"`` as scikit-learn's, which the paper used;
  ``config.gmm_max_iter`` EM iterations, 0 for the initialisation's own mixture, e.g. the
  k-means partition's weights, means and variances). Returns
  the train state at step 0 with these params and a fresh optimizer state; writes
  ``pretrain.json`` (time, last autoencoder loss, the GMM's log-likelihood and, with labels,
  ``init_clustering_accuracy``: the clustering accuracy of the GMM on the encoder means).
  """
  t0 = time.perf_counter()
  params = state.params
  pre_opt = optax.adam(config.pretrain_learning_rate, b1=config.adam_b1, b2=config.adam_b2,
                       eps=config.adam_eps)
  pre = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                         opt_state=pre_opt.init(params))
  num_steps = int(config.pretrain_epochs) * data.steps_per_epoch(train.num_points,
                                                                 config.batch_size)
  info = {"pretrain_epochs": int(config.pretrain_epochs), "pretrain_steps": num_steps}
  if num_steps:
    step_fn = steps.jit_train_step(model, pre_opt, objective="autoencoder",
                                   compute_dtype=_compute_dtype(config))
    batches = data.BatchIterator(train.x, config.batch_size, seed=config.seed + 1,
                                 binarize=train.binarize)
    bar = progress.Progress(num_steps, desc="pretrain (autoencoder)", quiet=quiet)
    for i in range(num_steps):
      pre, metrics = step_fn(pre, jnp.asarray(_reshape(next(batches).x, data_shape)), key)
      if (i + 1) % config.log_every == 0 or i + 1 == num_steps:
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
          raise experiment.NonFiniteLossError(
              f"The autoencoder pretraining loss is {loss} at pretraining step {i + 1}; no "
              "checkpoint is written before pretraining ends. Lower "
              "config.pretrain_learning_rate.")
        info["pretrain_loss"] = loss
        bar.update(i + 1, {"loss": loss})
    bar.close()
    params = pre.params
  params, fit = vae.vade.init_prior_from_data(
      model, params, key, _reshape(train.x, data_shape), n_init=max(int(config.gmm_n_init), 1),
      init=_later_key(config, "gmm_init"),
      max_iter=int(_later_key(config, "gmm_max_iter")))
  if not _finite_tree(params):
    raise experiment.NonFiniteLossError("The pretrained parameters or the GMM fitted to the "
                                        "encodings are not finite; lower "
                                        "config.pretrain_learning_rate.")
  history = np.asarray(fit.log_likelihood)  # empty with gmm_max_iter=0: no EM iteration ran
  info.update(gmm_log_likelihood=float(history[-1]) if history.size else None,
              gmm_converged=bool(fit.converged),
              pretrain_seconds=time.perf_counter() - t0)
  if train.y is not None:
    # The initialisation's own score (the GMM's MAP cluster of each encoder mean), which VaDE's
    # training then improves or not. Not q(c | x) at a sampled z: pretraining leaves the encoder's
    # variance head untrained, so those samples are noise of about unit scale.
    means = vae.posterior_means(model, params, _reshape(train.x, data_shape))
    clusters = np.asarray(gmm.map_latent(vae.vade.mixture_params(params), means))
    info["init_clustering_accuracy"] = vae.vade.clustering_accuracy(train.y, clusters)
  if workdir is not None:
    progress.write_json(workdir / "pretrain.json", info)
  return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params))


def evaluate_clustering(model: vae.VAE, params: Any, key: jax.Array, x: np.ndarray,
                        labels: np.ndarray | None, batch_size: int = 1000) -> dict:
  """VaDE's clusters of ``x``: the MAP of q(c | x) (:func:`lvmjax.vae.vade.map_cluster`, one
  sample of z as in the paper's code), VaDE's ELBO (``vade_elbo``, mean per point) and, with labels,
  ``clustering_accuracy`` (best one-to-one matching of clusters to labels) and
  ``adjusted_rand_index``.
  """
  values = steps.map_over_batches(lambda k, xb: _clustering_batch(model, params, k, xb), key, x,
                                  batch_size)
  clusters = values["cluster"]
  out = {"vade_elbo": float(np.mean(np.asarray(values["vade_elbo"], np.float64))),
         "num_clusters_used": int(len(np.unique(clusters))),
         "cluster_sizes": np.bincount(clusters, minlength=model.prior.num_components).tolist()}
  if labels is not None:
    out["clustering_accuracy"] = vae.vade.clustering_accuracy(labels, clusters)
    out["adjusted_rand_index"] = experiment.adjusted_rand_index(labels, clusters)
  return out


@vae_model._one_program(static_argnums=(0,))  # pylint: disable=protected-access
def _clustering_batch(model, params, key, xb):
  """One batch of :func:`evaluate_clustering` (module level: one program per model and shape)."""
  k_c, k_e = jax.random.split(key)
  return {"cluster": vae.vade.map_cluster(model, params, k_c, xb),
          "vade_elbo": vae.vade.elbo(model, params, k_e, xb)}


def write_cluster_figure(workdir: pathlib.Path, model: vae.VAE, params: Any,
                         image_shape: tuple[int, ...], key: jax.Array,
                         per_cluster: int = 10) -> pathlib.Path:
  """``vade_cluster_samples.png``: one row per cluster c, means of p(x | z) for z ~ p(z | c)."""
  k = model.prior.num_components
  clusters = np.repeat(np.arange(k), per_cluster)
  images, _ = vae.vade.sample_given(model, params, key, clusters, use_mean=True)
  return plotting.save_figure(plotting.plot_image_grid(
      np.asarray(images).reshape(len(clusters), -1), image_shape, per_cluster,
      title="VaDE: samples per cluster (row c: z ~ p(z|c), mean of p(x|z))"),
      workdir / "vade_cluster_samples.png")
