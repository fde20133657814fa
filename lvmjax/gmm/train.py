"""Fitting a Gaussian mixture as an experiment: data, model selection over K, EM with checkpoints,
evaluation and figures.

``fit_and_evaluate(config, workdir)`` is what ``experiments/fit_gmm.py`` runs and what tests and
notebooks call. The config fields are those of ``configs/gmm_digits.py``.

EM runs in blocks of ``config.checkpoint_every`` iterations with an Orbax checkpoint of the
parameters after each block, so a long fit (large N) that is killed resumes from its last block.
When the model selection (``config.k_values``) has fitted the final K, with the same data and
settings, that fit is the result (recorded and checkpointed as one block) instead of a second
fit: the launcher then compiles one EM program in all.
Every block is one call of :func:`lvmjax.gmm.fit`: the first with the configured initialisation
and restarts, the later ones with ``init=`` the previous block's ``GMMFitResult`` (restored from
the checkpoint after a restart), which continues its history, iteration count and stopping rule
(scikit-learn's: the change in mean log-likelihood below ``tol``). A run killed and resumed
runs the same blocks, so it ends with exactly the parameters of an uninterrupted run. With ``n_init > 1``
the restarts are compared after the first block (set ``checkpoint_every >= max_iter`` to compare
them at convergence, as scikit-learn does).

Several processes (``jax.distributed``, the launchers' ``--coordinator_address``,
``--num_processes``, ``--process_id`` flags): each process reads only its own block of the rows
of each split (:func:`load_data`), EM runs over the rows of all processes
(:func:`lvmjax.sharding.rows_from_processes`), and every number written (log-likelihoods,
BIC/AIC, ARI) is over all rows: the one-process numbers up to float rounding. When N is not a
multiple of the device count the last devices hold weight-0 padding rows, which change no EM
statistic but are seen by the K-means tolerance of ``init="kmeans"`` (as on several devices of
one process). Only process 0 writes files; its figures show its own rows.
"""
from __future__ import annotations

import functools
import json
import math
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lvmjax import checkpoint
from lvmjax import compile_cache
from lvmjax import data
from lvmjax import distributed
from lvmjax import experiment
from lvmjax import gmm
from lvmjax import plotting
from lvmjax import progress
from lvmjax import sharding

SELECT_K = ("none", "bic", "aic")

# The scores run as one compiled program per shape (not op by op, which compiled each of ~30
# operations per K and per split: most of the main job's compilations, time and memory).
_log_marginal = jax.jit(gmm.log_marginal)
_map_latent = jax.jit(gmm.map_latent)


def _to_device(a: Any, dtype: Any = None) -> jax.Array:
  """A host array on the default device (``jax.device_put``: unlike ``jnp.asarray`` of a NumPy
  array, it compiles nothing); a JAX array stays where it is."""
  if isinstance(a, jax.Array):
    return a if dtype is None else a.astype(dtype)
  return jax.device_put(np.asarray(a, dtype))


class GMMRun(NamedTuple):
  """What :func:`fit_and_evaluate` returns.

  Attributes:
    params: the fitted :class:`lvmjax.gmm.GMMParams`.
    results: the numbers written to ``results.json`` (log-likelihoods, BIC, AIC, ...).
    log_likelihood: (n_iter,) mean training log-likelihood per EM iteration.
    selection: ``{"k": [...], "bic": [...], "aic": [...], ...}`` when ``config.k_values`` is set,
      else None.
  """
  params: gmm.GMMParams
  results: dict
  log_likelihood: np.ndarray
  selection: dict | None


def validate_config(config: Any) -> None:
  """Raises ValueError for a config that cannot run (checked before any data is read)."""
  data.check_dataset_name(config.dataset)
  experiment.check_positive_ints(config, ["num_components", "n_init", "checkpoint_every",
                                          "max_to_keep"])
  experiment.check_positive_ints(config, ["max_iter", "num_train_points", "chunk_size"], minimum=0)
  experiment.check_positive_floats(config, ["tol", "reg_covar"], allow_zero=True)
  experiment.check_choice(config, "covariance_type", gmm.COVARIANCE_TYPES)
  experiment.check_choice(config, "init", gmm.INITS)
  experiment.check_choice(config, "select_k", SELECT_K)
  for k in config.k_values:
    experiment.check_positive_ints({"k": k}, ["k"])
  if config.select_k != "none" and not config.k_values:
    raise ValueError(f"config.select_k={config.select_k!r} needs config.k_values, the candidate "
                     "numbers of components, e.g. --config.k_values='(1,2,3,4,5,6)'.")
  if config.dataset == "synthetic_gmm":
    experiment.check_positive_ints(config, ["synthetic.num_points", "synthetic.num_components",
                                            "synthetic.num_features"])
    experiment.check_positive_floats(config, ["synthetic.separation"], allow_zero=True)


def load_data(config: Any) -> tuple[data.Dataset, data.Dataset | None]:
  """The training and (when the dataset has one) test split named by the config.

  With one process: all rows (of the training split, a fixed random subset of
  ``config.num_train_points`` rows when that is set). With several processes
  (``jax.process_count() > 1``): only this process's block of those rows
  (:func:`lvmjax.sharding.process_share`), read from the file without loading the rest; the
  blocks of all processes, in process order, are the one-process data.
  """
  return data.load_splits(config)


def _total_log_likelihood(params: gmm.GMMParams, x: Any) -> tuple[float, int]:
  """(sum of log p(x) over the rows of every process, number of those rows)."""
  ll = np.asarray(_log_marginal(params, _to_device(x)), np.float64)
  total, n = sharding.process_sum((ll.sum(), ll.shape[0]))
  return float(total), int(n)


def _scores(params: gmm.GMMParams, x: Any, num_active: int | None = None) -> dict:
  """Mean log-likelihood, BIC and AIC over the rows of every process (``x``: this process's).

  With ``num_active``, ``params`` are a fit with that many active components (the others of
  weight 0, which add nothing to p(x)): scored as the mixture of those components, by the
  program compiled for all of them.
  """
  total, n = _total_log_likelihood(params, x)
  p = gmm.num_parameters(params if num_active is None else  # sliced on the host: no program
                         gmm.first_components(jax.device_get(params), num_active))
  return {"log_likelihood": total / n, "bic": -2.0 * total + p * math.log(n),
          "aic": -2.0 * total + 2.0 * p, "num_points": n}


def _ari(params: gmm.GMMParams, x: Any, y: np.ndarray) -> float:
  """ARI of the MAP components against the labels, over the rows of every process."""
  pred = np.asarray(_map_latent(params, _to_device(x)))
  return experiment.adjusted_rand_index(sharding.process_concat(y), sharding.process_concat(pred))


def _on_host(params: gmm.GMMParams) -> gmm.GMMParams:
  """A one-device copy of (possibly mesh-replicated, multi-process) parameters."""
  return jax.device_put(jax.device_get(params))


def _params_template(k: int, d: int, covariance_type: str, dtype) -> dict:
  return {"weights": jnp.zeros((k,), dtype), "means": jnp.zeros((k, d), dtype),
          "covariances": jnp.zeros(gmm.covariance_shape(covariance_type, k, d), dtype),
          "lower_bound": jnp.zeros((), dtype)}


def _state_of(params: gmm.GMMParams, lower_bound) -> dict:
  # A fit adopted from the model selection is on the host (NumPy): its lower bound stays NumPy
  # too, since with several processes a one-device jax.Array cannot be saved (Orbax refuses it).
  if not isinstance(lower_bound, jax.Array):
    lower_bound = np.asarray(lower_bound)
  return {"weights": params.weights, "means": params.means, "covariances": params.covariances,
          "lower_bound": lower_bound}


def _finite_params(params: gmm.GMMParams) -> bool:
  """All parameters finite (checked on the host: no program compiled per K)."""
  return all(bool(np.all(np.isfinite(a))) for a in jax.tree.leaves(jax.device_get(params)))


def _selection_fit(config: Any, key: jax.Array, fit_data: tuple[jax.Array, jax.Array | None],
                   k: int, release_programs: bool = False) -> gmm.GMMFitResult:
  """The model selection's fit of K=k: in the program of the largest K of ``config.k_values``,
  with the components past k inactive, from the key ``fold_in(key, k)``.

  With one restart, the initialisation (``max_iter=0``, which compiles no EM iteration) and EM
  (from its parameters) run as two programs: compiling them one after the other, with the
  compiler's spare memory handed back in between (``release_programs``), peaks at the larger of
  the two instead of their sum (the launcher's peak memory). The fit equals the one-call fit up
  to rounding (the data shift is applied to the initial parameters and taken back).
  """
  fx, fw = fit_data
  fit = functools.partial(gmm.fit, jax.random.fold_in(key, k), fx, max(config.k_values),
                          config.covariance_type, tol=config.tol, reg_covar=config.reg_covar,
                          chunk_size=config.chunk_size or None, sample_weight=fw,
                          check_finite=False, num_active=k)
  if config.n_init > 1:  # the restarts are compared after EM: one program
    return fit(init=config.init, n_init=config.n_init, max_iter=config.max_iter)
  start = fit(init=config.init, max_iter=0).params
  if release_programs:
    compile_cache.return_free_memory()
  return fit(init=start, max_iter=config.max_iter)


def _first_components_fit(result: gmm.GMMFitResult, k: int) -> gmm.GMMFitResult:
  """A ``num_active=k`` fit as the fit of its k components, on the host (NumPy leaves: the
  evaluation puts the final parameters on the device once)."""
  result = jax.device_get(result)
  return result._replace(params=gmm.first_components(result.params, k))


def select_num_components(config: Any, x: jax.Array, key: jax.Array, workdir: pathlib.Path,
                          x_test: jax.Array | None = None, *,
                          fit_data: tuple[jax.Array, jax.Array | None] | None = None,
                          release_programs: bool = False) -> dict:
  """Fits one mixture per K in ``config.k_values`` and scores it by BIC and AIC on the train data.

  Every K is fitted by one compiled program, that of the largest K, with the components past K
  inactive (:func:`lvmjax.gmm.fit`'s ``num_active``), and scored by one program per split: the
  compilations do not grow with the number of Ks.

  Results are saved to ``<workdir>/model_selection.json`` after each K (by process 0), and a
  restarted run reuses the Ks already done. With several processes, ``x`` and ``x_test`` are this
  process's rows, ``fit_data`` the global (row-sharded) training rows and weights, and the
  scores are over the rows of all processes; every process must call this.
  With ``release_programs``, the memory the compiler no longer needs is handed back after each
  fit and each row (:func:`lvmjax.compile_cache.return_free_memory`), and the programs compiled for the
  selection are freed after its last row (:func:`lvmjax.compile_cache.release_programs`): the
  final fit does not run them again.

  Returns:
    ``{"k": [...], "bic": [...], "aic": [...], "train_log_likelihood": [...],
    "test_log_likelihood": [...] (when x_test is given), "n_iter": [...], "best_bic": K,
    "best_aic": K}``.
  """
  return _select(config, x, key, workdir, x_test, fit_data=fit_data,
                 release_programs=release_programs)[0]


def _select(config, x, key, workdir, x_test=None, *, fit_data=None, release_programs=False):
  """`select_num_components`'s table, and the fits it ran: ``{K: GMMFitResult}`` of the first K
  components, on the host (the Ks restored from ``model_selection.json`` are not refitted, so
  they are missing)."""
  path = workdir / "model_selection.json"
  done = {}
  if path.exists():
    try:
      old = json.loads(path.read_text())
      done = {k: {name: old[name][i] for name in old if isinstance(old[name], list)}
              for i, k in enumerate(old.get("k", []))}
    except (ValueError, KeyError, IndexError):
      done = {}
  primary = distributed.is_primary()
  n = int(sharding.process_sum(x.shape[0]))
  k_max = max(config.k_values)
  if k_max > n:
    raise ValueError(f"config.k_values has K={k_max} but the training data has only {n} points.")
  rows, fits = [], {}
  for k in config.k_values:
    if k in done:
      rows.append(done[k])
      continue
    res = _selection_fit(config, key, fit_data if fit_data is not None else (x, None), k,
                         release_programs)
    if release_programs:  # what compiling the fit took and no longer needs, before the scores
      compile_cache.return_free_memory()
    host = jax.device_get(res)  # one copy for the scores and the fit kept
    params = jax.device_put(host.params)
    fits[k] = _first_components_fit(host, k)
    if not _finite_params(params):
      raise ValueError(
          f"Model selection: the fit with K={k} components has non-finite parameters (a "
          "component with an ill-defined covariance: singleton or collapsed points). Increase "
          "config.reg_covar or remove the largest Ks from config.k_values.")
    scores = _scores(params, x, k)
    row = {"k": int(k), "bic": scores["bic"], "aic": scores["aic"],
           "train_log_likelihood": scores["log_likelihood"],
           "n_iter": int(res.n_iter), "converged": bool(res.converged)}
    if x_test is not None:
      row["test_log_likelihood"] = _scores(params, x_test, k)["log_likelihood"]
    logging.info("model selection: K=%d BIC %.1f AIC %.1f (%d iterations)", k, row["bic"],
                 row["aic"], row["n_iter"])
    rows.append(row)
    if release_programs:  # what compiling this K's programs took and no longer needs
      compile_cache.return_free_memory()
    table = {name: [r.get(name) for r in rows] for name in row}
    if primary:
      experiment.write_results(workdir, table, "model_selection.json")
  if release_programs:
    # The selection's programs are not run again: free them (the launcher's peak memory; a
    # later run loads them from the persistent compilation cache).
    compile_cache.release_programs()
  table = {name: [r.get(name) for r in rows] for name in rows[0]}
  table["best_bic"] = int(table["k"][int(np.argmin(table["bic"]))])
  table["best_aic"] = int(table["k"][int(np.argmin(table["aic"]))])
  if primary:
    experiment.write_results(workdir, table, "model_selection.json")
  return table, fits


def fit_and_evaluate(config: Any, workdir: str | pathlib.Path, *, quiet: bool = False,
                     release_programs: bool = False) -> GMMRun:
  """Fits a GMM as described by ``config`` and writes metrics, checkpoints and figures to workdir.

  Writes ``config.json``, ``metrics.jsonl`` (one line per EM iteration: ``step`` = iteration,
  ``log_likelihood`` = mean training log-likelihood of the parameters that iteration started
  from), ``checkpoints/``, ``results.json``, ``model_selection.json`` (when ``config.k_values``)
  and the figures ``gmm_components.png``, ``gmm_log_likelihood.png`` and
  ``gmm_model_selection.png``. A workdir that already holds a checkpoint of the same config is
  resumed from it.

  Args:
    config: an ``ml_collections.ConfigDict`` like ``configs/gmm_digits.py``'s.
    workdir: the run's directory.
    quiet: no progress display.
    release_programs: hand the memory the compiler no longer needs back to the system after each
      fit (:func:`lvmjax.compile_cache.return_free_memory`), and free the model selection's
      compiled programs after it, the final fit's first block's after that block, and the final
      fit's before the evaluation (:func:`lvmjax.compile_cache.release_programs`:
      ``jax.clear_caches()``, which empties every in-memory JAX cache of the process: for the
      launcher, where it lowers the peak memory; the persistent compilation cache still holds
      them).

  Returns:
    A :class:`GMMRun`.

  Raises:
    ValueError: a bad config (unknown dataset, negative sizes, ...), missing data files, or a
      workdir holding a different run.
    experiment.NonFiniteLossError: EM produced non-finite parameters or log-likelihood.
  """
  validate_config(config)
  workdir = experiment.prepare_workdir(workdir)
  primary = distributed.is_primary()
  train, test = load_data(config)  # with several processes: this process's rows only
  x = _to_device(train.x)
  x_test = None if test is None else _to_device(test.x)
  # With several devices (or hosts), EM runs data-parallel: each process puts its own block of
  # rows on its devices (padding rows, at the end, get weight 0); the evaluation sums over the
  # processes' rows.
  mesh = sharding.data_mesh() if sharding.spread_devices() else None
  fit_x, fit_w = (x, None) if mesh is None else sharding.rows_from_processes(train.x, mesh)
  n, d = int(sharding.process_sum(x.shape[0])), train.num_features
  if config.select_k == "none" and config.num_components > n:
    raise ValueError(f"config.num_components={config.num_components} is larger than the {n} "
                     "training points.")
  key = jax.random.key(config.seed)
  selection_key, fit_key = jax.random.split(key)

  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.max_to_keep)
  try:
    meta = experiment.check_resumable(ckpt, config, workdir)
    if primary:
      progress.write_config_json(workdir, config)
    selection, fits = None, {}
    if config.k_values:
      selection, fits = _select(config, x, selection_key, workdir, x_test,
                                fit_data=(fit_x, fit_w), release_programs=release_programs)
    k = config.num_components
    if config.select_k != "none":
      k = selection[f"best_{config.select_k}"]
    if k > n:
      raise ValueError(f"config.num_components={k} is larger than the {n} training points.")
    writer = progress.MetricsWriter(workdir, enabled=primary)
    bar = progress.Progress(config.max_iter, desc=f"EM K={k}", quiet=quiet or not primary)
    block = config.checkpoint_every
    chunk = config.chunk_size or gmm.default_chunk_size(n, k, d)

    def save(params, lower_bound, n_iter, converged, history):
      ckpt.save(n_iter, _state_of(params, lower_bound),
                {"config": config, "n_iter": n_iter, "converged": converged,
                 "num_components": k, "history": [float(v) for v in history]})

    result = None  # the fit so far: gmm.fit continues it block by block
    if meta is not None:
      restored, meta = ckpt.restore(_params_template(k, d, config.covariance_type, x.dtype))
      params = gmm.GMMParams(restored["weights"], restored["means"], restored["covariances"],
                             config.covariance_type)
      n_iter, converged = int(meta["n_iter"]), bool(meta["converged"])
      history = list(meta["history"])
      result = gmm.GMMFitResult(params, _to_device(history, x.dtype), _to_device(n_iter),
                                _to_device(converged), restored["lower_bound"])
      writer.truncate_after(n_iter)
      logging.info("Resuming the EM fit from iteration %d (%s).", n_iter, ckpt.directory)
    else:
      writer.truncate_after(None)
      n_iter, converged, history = 0, False, []
    bar.update(n_iter, {"log_likelihood": history[-1]} if history else None)

    adopt = result is None and selection is not None and k in config.k_values
    # One gmm.fit per block of checkpoint_every iterations, each continuing the last: the same
    # iterations and stopping rule as one uninterrupted fit. The first block initialises (with
    # n_init restarts); the later ones compile once for all blocks of the same length. When the
    # model selection has fitted this K (same data and settings), its fit is the result: one
    # whole "block", recorded as the blocks are (metrics, checkpoint), and nothing compiled.
    while result is None or (not converged and n_iter < config.max_iter):
      first_block = result is None  # initialises: a program no later block runs
      if adopt:
        result = fits.get(k)
        if result is None:  # the selection was restored from its file: the same fit again
          result = _first_components_fit(
              _selection_fit(config, selection_key, (fit_x, fit_w), k), k)
          logging.info("Refitting K=%d as the model selection did (its fit is the result).", k)
        adopt = False  # (it ran to convergence or max_iter: no block follows)
      else:
        result = gmm.fit(fit_key, fit_x, k, config.covariance_type,
                         init=config.init if result is None else result, n_init=config.n_init,
                         max_iter=min(n_iter + block, config.max_iter), tol=config.tol,
                         reg_covar=config.reg_covar, chunk_size=chunk, sample_weight=fit_w,
                         check_finite=False)
      if release_programs:  # what compiling the block took, before the checkpoint is written
        compile_cache.return_free_memory()
      done = int(result.n_iter) - n_iter
      new = [float(v) for v in np.asarray(result.log_likelihood)[n_iter:]]
      bad = [i for i, v in enumerate(new) if not np.isfinite(v)]
      if bad or not _finite_params(result.params):
        step = n_iter + (bad[0] + 1 if bad else done)
        ckpt.wait_until_finished()
        what, value = ("The EM log-likelihood", new[bad[0]]) if bad else (
            "A mixture parameter after EM", "NaN or infinite")
        raise experiment.NonFiniteLossError(experiment.non_finite_message(
            what, value, step, n_iter, ckpt,
            "Increase config.reg_covar or lower config.num_components (a component collapsed)."))
      for i, v in enumerate(new):
        writer.write(n_iter + i + 1, {"log_likelihood": v})
      params, converged = result.params, bool(result.converged)
      n_iter += done
      history += new
      save(params, result.lower_bound, n_iter, converged, history)
      bar.update(n_iter, {"log_likelihood": history[-1]} if history else None)
      if release_programs and first_block and not converged and n_iter < config.max_iter:
        # The first block's program (initialisation and iterations) is not run again; the
        # continuing blocks compile their own: free it first (the launcher's peak memory).
        compile_cache.release_programs()
    bar.close()
    ckpt.wait_until_finished()
  finally:
    ckpt.close()

  if release_programs:
    compile_cache.release_programs()
  params = _on_host(params)
  results = evaluate(params, train, test, config)
  results.update(num_components=k, n_iter=n_iter, converged=converged)
  if selection is not None:
    results.update(best_bic=selection["best_bic"], best_aic=selection["best_aic"])
  if primary:
    experiment.write_results(workdir, results)
    if config.figures:
      write_figures(workdir, params, train, history, selection, results, config)
  return GMMRun(params, results, np.asarray(history), selection)


def evaluate(params: gmm.GMMParams, train: data.Dataset, test: data.Dataset | None,
             config: Any) -> dict:
  """Mean log-likelihoods, BIC/AIC, and agreement of MAP components with the labels (ARI).

  With several processes ``train`` and ``test`` hold this process's rows; every number is over
  the rows of all processes (sums of log-likelihoods added over processes, labels gathered for
  the ARI), so it equals the one-process number. Every process must call this.
  """
  x = _to_device(train.x)
  scores = _scores(params, x)
  results = {
      "train_log_likelihood": scores["log_likelihood"], "bic": scores["bic"],
      "aic": scores["aic"], "num_parameters": gmm.num_parameters(params),
      "num_train_points": scores["num_points"],
  }
  if train.y is not None:
    results["train_ari"] = _ari(params, x, train.y)
  if test is not None:
    xt = _to_device(test.x)
    results["test_log_likelihood"] = _scores(params, xt)["log_likelihood"]
    if test.y is not None:
      results["test_ari"] = _ari(params, xt, test.y)
  if config.dataset == "synthetic_gmm":
    s = config.synthetic
    truth = data.make_gmm(s.seed, s.num_components, s.num_features, s.separation)
    true_params = gmm.GMMParams(_to_device(truth.weights, x.dtype),
                                _to_device(truth.means, x.dtype),
                                _to_device(truth.covariances, x.dtype), "full")
    results["true_num_components"] = int(s.num_components)
    results["true_train_log_likelihood"] = _scores(true_params, x)["log_likelihood"]
    if test is not None:
      results["true_test_log_likelihood"] = _scores(true_params,
                                                    _to_device(test.x))["log_likelihood"]
  return results


def write_figures(workdir: pathlib.Path, params: gmm.GMMParams, train: data.Dataset,
                  history: list[float], selection: dict | None, results: dict,
                  config: Any) -> list[pathlib.Path]:
  """Writes the run's figures; returns their paths.

  * ``gmm_components.png``: the points (of ``train``, coloured by MAP component) and each
    component's 1- and 2-σ ellipse, projected on the first two principal components above 2-D.
  * ``gmm_means.png`` (image data, e.g. the 8x8 digits): each component's mean as an image,
    with its weight in the panel title.
  * ``gmm_log_likelihood.png``: the mean log-likelihood per EM iteration (a first iteration far
    below the rest is clipped to the lower edge and labelled with its value).
  * ``gmm_model_selection.png`` (with ``selection``): BIC and AIC against K.

  The scatter plot shows the points of ``train``: with several processes, process 0 calls this
  with its own rows only (the first block of the training set).
  """
  x = _to_device(train.x)
  assignments = np.asarray(_map_latent(params, x))
  paths = []
  fig = plotting.plot_gmm(
      train.x, np.asarray(params.weights), np.asarray(params.means),
      np.asarray(params.covariances), params.covariance_type, assignments=assignments,
      title=f"GMM on {config.dataset}: K={params.num_components}, {params.covariance_type} "
            f"covariances" + ("" if train.num_features <= 2 else "\n(first two principal "
                              "components; points coloured by MAP component)"))
  paths.append(plotting.save_figure(fig, workdir / "gmm_components.png"))
  if train.image_shape is not None:
    fig = plotting.plot_component_means(
        np.asarray(params.means), train.image_shape, np.asarray(params.weights),
        title=f"GMM on {config.dataset}: the {params.num_components} component means as images "
              "(w = mixing weight)")
    paths.append(plotting.save_figure(fig, workdir / "gmm_means.png"))
  fig = plotting.plot_log_likelihood(history, test_value=results.get("test_log_likelihood"),
                                     title=f"EM on {config.dataset}: mean log-likelihood per point")
  paths.append(plotting.save_figure(fig, workdir / "gmm_log_likelihood.png"))
  if selection is not None:
    true_k = config.synthetic.num_components if config.dataset == "synthetic_gmm" else None
    fig = plotting.plot_information_criteria(selection["k"], selection["bic"], selection["aic"],
                                             true_k=true_k)
    paths.append(plotting.save_figure(fig, workdir / "gmm_model_selection.png"))
  return paths
