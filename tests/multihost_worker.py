"""Subprocess body of tests/test_distributed.py's multi-host data tests (own JAX start-up).

``python -m tests.multihost_worker PID NPROC PORT OUT_DIR``: one of NPROC processes on localhost
(2 CPU devices each) joined by ``jax.distributed`` with gloo collectives. OUT_DIR holds what the
test prepared: ``config.json`` (a ``fit_gmm`` config whose dataset is a small ``mnist.npz`` in
OUT_DIR/data) and ``stream.npz`` (x and w for the streaming cases). The process:

* runs ``lvmjax.gmm.train.fit_and_evaluate`` into OUT_DIR/gmm (process 0 writes), with
  ``numpy.load`` of the data file forbidden, and records every ``load_dataset`` call;
* runs ``gmm.streaming.fit`` and ``streamed_stats`` with its own block of the rows (process 0: a
  memmap of its rows split over its devices, process 1: a callable yielding (x, w) batches),
  against the in-memory ``gmm.fit`` and ``e_step`` of all rows, in float64; and one pass with a
  NaN on the last process, which must raise on every process.

Each process writes OUT_DIR/p<PID>.json; process 0 also OUT_DIR/gmm_params.npz.
"""
import json
import os
import sys
import time


def _diff(a, b):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _fit_case(ref, got):
  """Largest parameter difference, largest relative log-likelihood difference, iterations."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  same = int(ref.n_iter) == int(got.n_iter)
  a, b = np.asarray(ref.log_likelihood), np.asarray(got.log_likelihood)
  return {"params": max(_diff(u, v) for u, v in zip(jax.tree.leaves(ref.params),
                                                     jax.tree.leaves(got.params))),
          "log_likelihood": float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0)))
                            if same else None,
          "n_iter": [int(ref.n_iter), int(got.n_iter)]}


def _fit_gmm(out_dir, res):
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lvmjax.data import datasets  # pylint: disable=g-import-not-at-top
  from lvmjax.gmm import train  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(json.loads(
      open(os.path.join(out_dir, "config.json")).read()))
  calls = []
  # The launchers load through data.load_splits, which calls datasets.load_dataset.
  load, np_load = datasets.load_dataset, np.load

  def recording_load(name, split="train", **kwargs):
    ds = load(name, split, **kwargs)
    rows = kwargs.get("rows")
    calls.append({"split": split, "num_points": ds.num_points,
                  "rows": None if rows is None else (
                      [rows.start, rows.stop] if isinstance(rows, slice) else len(rows))})
    return ds

  def no_full_load(path, *args, **kwargs):
    if str(path).endswith("mnist.npz"):
      raise AssertionError(f"numpy.load({path}) read the whole data file")
    return np_load(path, *args, **kwargs)

  datasets.load_dataset = recording_load
  np.load = no_full_load
  try:
    run = train.fit_and_evaluate(config, os.path.join(out_dir, "gmm"), quiet=True)
  finally:
    datasets.load_dataset, np.load = load, np_load
  res["load_calls"] = calls
  if jax.process_index() == 0:
    p = run.params
    np.savez(os.path.join(out_dir, "gmm_params.npz"), weights=np.asarray(p.weights),
             means=np.asarray(p.means), covariances=np.asarray(p.covariances),
             log_likelihood=run.log_likelihood)


def _streaming(out_dir, res, nproc):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lvmjax import gmm, sharding  # pylint: disable=g-import-not-at-top
  from lvmjax.gmm import streaming  # pylint: disable=g-import-not-at-top
  with np.load(os.path.join(out_dir, "stream.npz")) as f:
    x, w = f["x"], f["w"]
  me = jax.process_index()
  rows = sharding.process_rows(len(x))
  np.save(os.path.join(out_dir, f"x{me}.npy"), x[rows])
  mine_x, mine_w = np.load(os.path.join(out_dir, f"x{me}.npy"), mmap_mode="r"), w[rows]

  def batches():  # uneven batches, as a reader of files of different lengths would give
    for a, b in ((0, 97), (97, 98), (98, len(mine_x))):
      yield np.asarray(mine_x[a:b]), mine_w[a:b]

  # Process 0: a memmap of its rows with weights, each batch split over its two devices;
  # process 1: a callable yielding (x, w) batches, on one device.
  source = (dict(data=mine_x, sample_weight=mine_w, mesh=sharding.data_mesh(jax.local_devices()))
            if me % 2 == 0 else dict(data=batches))
  key = jax.random.key(5)
  with jax.enable_x64(True):
    # Initialisation by K-means++ on a subsample of all processes' rows that is every row
    # (init_size >= N), so the in-memory fit's.
    ref = gmm.fit(key, x, 4, "full", init="k-means++", sample_weight=w, tol=1e-8)
    got = streaming.fit(key, covariance_type="full", num_components=4, init="k-means++",
                        tol=1e-8, batch_size=64, **source)
    res["stream_kpp"] = _fit_case(ref, got)
    stats = streaming.streamed_stats(ref.params, batch_size=64, **source)
    res["stream_stats"] = max(_diff(a, b) for a, b in zip(stats, gmm.e_step(ref.params, x, w)))
    # A given initial mixture, and a NaN in the last process's rows: every process raises
    # (none is left waiting for the others).
    if me == nproc - 1:
      bad = np.array(mine_x)
      bad[-1, 0] = np.nan
      source = dict(data=bad, sample_weight=mine_w)
    try:
      streaming.fit(key, covariance_type="full", num_components=4, init=ref.params, max_iter=1,
                    batch_size=64, **source)
      res["nan_error"] = None
    except ValueError as e:
      res["nan_error"] = str(e)


def main(argv):
  t0 = time.time()
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  pid, nproc, port, out_dir = int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=2")
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from lvmjax import distributed  # pylint: disable=g-import-not-at-top
  assert distributed.maybe_initialize(f"localhost:{port}", nproc, pid)
  assert jax.process_count() == nproc and jax.device_count() == 2 * nproc
  res = {"process_index": jax.process_index(), "seconds": {"start": time.time() - t0}}
  t = time.time()
  _fit_gmm(out_dir, res)
  res["seconds"]["fit_gmm"] = time.time() - t
  t = time.time()
  _streaming(out_dir, res, nproc)
  res["seconds"]["streaming"] = time.time() - t
  with open(os.path.join(out_dir, f"p{pid}.json"), "w") as f:
    json.dump(res, f)


if __name__ == "__main__":
  main(sys.argv)
