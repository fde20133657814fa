"""K-means as an experiment: data, an inertia-against-K sweep, Lloyd's algorithm with checkpoints,
evaluation and figures.

``fit_and_evaluate(config, workdir)`` is what ``experiments/fit_kmeans.py`` runs (config fields:
``configs/kmeans_digits.py``). Lloyd's iterations run in blocks of ``config.checkpoint_every``;
after each block the centroids are checkpointed and the next block starts from them
(:func:`lvmjax.kmeans.fit` with an array ``init``), so a killed run resumes from its last block.
The stopping rule is checked at every iteration as in one uninterrupted fit, except that the
"labels did not change" test cannot fire on the first iteration of a block (it needs the previous
iteration's labels), which can add one iteration per block. With ``n_init > 1`` the restarts are
compared after the first block. When the sweep (``config.k_values``) has fitted the final K, that
fit is the result (recorded and checkpointed as one block), not fitted a second time.
"""
from __future__ import annotations

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
from lvmjax import kmeans
from lvmjax import plotting
from lvmjax import progress
from lvmjax import sharding


class KMeansRun(NamedTuple):
  """What :func:`fit_and_evaluate` returns.

  Attributes:
    centroids: (K, D) final centroids.
    labels: (N,) cluster of each training point (of all processes' points, in order).
    results: the numbers written to ``results.json``.
    inertia_history: inertia per Lloyd iteration.
    sweep: ``{"k": [...], "inertia": [...]}`` when ``config.k_values`` is set, else None.
  """
  centroids: np.ndarray
  labels: np.ndarray
  results: dict
  inertia_history: np.ndarray
  sweep: dict | None


def validate_config(config: Any) -> None:
  """Raises ValueError for a config that cannot run."""
  data.check_dataset_name(config.dataset)
  experiment.check_positive_ints(config, ["num_clusters", "n_init", "checkpoint_every",
                                          "max_to_keep"])
  experiment.check_positive_ints(config, ["max_iter", "num_train_points", "chunk_size"], minimum=0)
  experiment.check_positive_floats(config, ["tol"], allow_zero=True)
  experiment.check_choice(config, "init", kmeans.INIT_METHODS)
  for k in config.k_values:
    experiment.check_positive_ints({"k": k}, ["k"])


def fit_and_evaluate(config: Any, workdir: str | pathlib.Path, *, quiet: bool = False,
                     release_programs: bool = False) -> KMeansRun:
  """Runs K-means as described by ``config``; writes metrics, checkpoints and figures to workdir.

  Writes ``config.json``, ``metrics.jsonl`` (``step`` = iteration, ``inertia``), ``checkpoints/``,
  ``results.json``, and ``kmeans_clusters.png`` (points coloured by cluster, PCA plane above 2-D)
  and ``kmeans_inertia.png`` (inertia against K, when ``config.k_values``).

  With several processes (``jax.process_count() > 1``) each process reads only its own block of
  the rows (:func:`lvmjax.data.load_splits`), Lloyd's iterations run over the rows of all
  processes, and the results are over all rows, as with one process; only process 0 writes
  files, and its ``kmeans_clusters.png`` shows its own rows.

  Args:
    config: an ``ml_collections.ConfigDict`` like ``configs/kmeans_digits.py``'s.
    workdir: the run's directory.
    quiet: no progress display.
    release_programs: for the launcher, where nothing else runs in the process: hand the memory
      the compiler no longer needs back to the system after each fit
      (:func:`lvmjax.compile_cache.return_free_memory`), and free the sweep's programs after the
      sweep and the first block's after that block (:func:`lvmjax.compile_cache.release_programs`,
      which empties every in-memory JAX cache of the process).

  Returns:
    A :class:`KMeansRun`.

  Raises:
    ValueError: a bad config, missing data, or a workdir holding a different run.
  """
  validate_config(config)
  workdir = experiment.prepare_workdir(workdir)
  primary = distributed.is_primary()
  train, test = data.load_splits(config)  # with several processes: this process's rows only
  x = jnp.asarray(train.x)
  n, d = int(sharding.process_sum(x.shape[0])), train.num_features
  k = config.num_clusters
  if k > n:
    raise ValueError(f"config.num_clusters={k} is larger than the {n} training points.")
  chunk = config.chunk_size or None
  # With several devices (or hosts), Lloyd's iterations run data-parallel over all of them. One
  # process pads its rows inside the fit; several processes each put their own rows on their
  # devices (padding rows, at the end, get weight 0).
  mesh = sharding.data_mesh() if sharding.spread_devices() else None
  fit_x, fit_w = x, None
  if jax.process_count() > 1:
    fit_x, fit_w = sharding.rows_from_processes(train.x, mesh)
  key = jax.random.key(config.seed)
  sweep_key, fit_key = jax.random.split(key)

  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.max_to_keep)
  try:
    meta = experiment.check_resumable(ckpt, config, workdir)
    if primary:
      progress.write_config_json(workdir, config)
    sweep, adopted = None, None
    if config.k_values:
      inertias = []
      k_max = max(config.k_values)
      if k_max > n:
        raise ValueError(f"config.k_values has K={k_max} but the training data has only {n} "
                         "points.")
      for kk in config.k_values:
        # Every K in the program of the largest (num_active): one compilation for the sweep.
        res = kmeans.fit(jax.random.fold_in(sweep_key, kk), fit_x, k_max, init=config.init,
                         n_init=config.n_init, max_iter=config.max_iter, tol=config.tol,
                         sample_weight=fit_w, chunk_size=chunk, mesh=mesh, num_active=kk)
        if release_programs:
          compile_cache.return_free_memory()
        inertias.append(float(res.inertia))
        if kk == k and meta is None:  # the final fit's K, same data and settings: keep its fit
          host = jax.device_get(res._replace(labels=None))
          adopted = host._replace(centroids=np.asarray(host.centroids)[:k])
        logging.info("inertia sweep: K=%d inertia %.1f (%d iterations)", kk, inertias[-1],
                     int(res.n_iter))
      sweep = {"k": [int(v) for v in config.k_values], "inertia": inertias}
      if release_programs:  # the sweep's programs are not run again
        compile_cache.release_programs()
    writer = progress.MetricsWriter(workdir, enabled=primary)
    bar = progress.Progress(config.max_iter, desc=f"K-means K={k}", quiet=quiet or not primary)
    block = config.checkpoint_every

    if meta is not None:
      restored, meta = ckpt.restore({"centroids": jnp.zeros((k, d), x.dtype)})
      centroids = restored["centroids"]
      n_iter, converged = int(meta["n_iter"]), bool(meta["converged"])
      history = list(meta["history"])
      writer.truncate_after(n_iter)
      logging.info("Resuming K-means from iteration %d.", n_iter)
    else:
      writer.truncate_after(None)
      centroids, n_iter, converged, history = None, 0, False, []
    while (centroids is None) or (not converged and n_iter < config.max_iter):
      todo = min(block, config.max_iter - n_iter)
      if centroids is None and adopted is not None:
        # The sweep has fitted this K (in its program, the clusters past K inactive): its fit is
        # the result, recorded as one block; nothing is compiled or fitted again.
        res, adopted = adopted, None
      elif centroids is None:
        res = kmeans.fit(fit_key, fit_x, k, init=config.init, n_init=config.n_init,
                         max_iter=todo, tol=config.tol, sample_weight=fit_w, chunk_size=chunk,
                         mesh=mesh)
      else:
        res = kmeans.fit(fit_key, fit_x, k, init=centroids, max_iter=todo, tol=config.tol,
                         sample_weight=fit_w, chunk_size=chunk, mesh=mesh)
      first_block = centroids is None
      if release_programs:
        compile_cache.return_free_memory()
      done = int(res.n_iter)
      new = [float(v) for v in np.asarray(res.inertia_history)[:done]]
      if not np.all(np.isfinite(new)):
        raise experiment.NonFiniteLossError(experiment.non_finite_message(
            "The K-means inertia", new, n_iter + done, n_iter, ckpt, "Check the data."))
      for i, v in enumerate(new):
        writer.write(n_iter + i + 1, {"inertia": v})
      centroids, converged = res.centroids, bool(res.converged)
      n_iter += done
      history += new
      ckpt.save(n_iter, {"centroids": centroids},
                {"config": config, "n_iter": n_iter, "converged": converged, "history": history})
      bar.update(n_iter, {"inertia": new[-1]} if new else None)
      if todo == 0:
        break
      if release_programs and first_block and not converged and n_iter < config.max_iter:
        compile_cache.release_programs()  # the first block's program is not run again
    bar.close()
    ckpt.wait_until_finished()
  finally:
    ckpt.close()

  if mesh is not None:  # replicated over the mesh: evaluate with a one-device copy
    centroids = jnp.asarray(jax.device_get(centroids))
  # Every number is over the rows of all processes: inertias added, labels gathered for the ARI.
  local_labels = np.asarray(kmeans.predict(centroids, x, chunk_size=chunk))
  labels = sharding.process_concat(local_labels)
  results = {"num_clusters": k, "n_iter": n_iter, "converged": converged,
             "train_inertia": float(sharding.process_sum(
                 float(kmeans.inertia(x, centroids, chunk_size=chunk)))),
             "num_train_points": n}
  results["train_mean_squared_distance"] = results["train_inertia"] / n
  if train.y is not None:
    results["train_ari"] = experiment.adjusted_rand_index(sharding.process_concat(train.y), labels)
  if test is not None:
    xt = jnp.asarray(test.x)
    inertia_t, n_t = sharding.process_sum((float(kmeans.inertia(xt, centroids)), xt.shape[0]))
    results["test_mean_squared_distance"] = float(inertia_t) / int(n_t)
    if test.y is not None:
      results["test_ari"] = experiment.adjusted_rand_index(
          sharding.process_concat(test.y),
          sharding.process_concat(np.asarray(kmeans.predict(centroids, xt))))
  if primary:
    experiment.write_results(workdir, results)
    if config.figures:
      fig = plotting.plot_clusters(train.x, np.asarray(centroids), local_labels,
                                   title=f"K-means on {config.dataset}: K={k}"
                                   + ("" if d <= 2 else " (first two principal components)"))
      plotting.save_figure(fig, workdir / "kmeans_clusters.png")
      if sweep is not None:
        plotting.save_figure(plotting.plot_inertia(sweep["k"], sweep["inertia"]),
                             workdir / "kmeans_inertia.png")
  return KMeansRun(np.asarray(centroids), labels, results, np.asarray(history), sweep)
