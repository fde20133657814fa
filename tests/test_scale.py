"""Scale: streamed exact EM, stepwise online EM, mini-batch K-means, many fits at once (vmap),
sharded fits on a one-device mesh, flat memory.

Multi-device and multi-process equality lives in tests/test_distributed.py (subprocesses).
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvmjax import gmm, kmeans, sharding
from lvmjax.gmm import online, streaming
from lvmjax.kmeans import minibatch
from tests import processes


def blobs(n=600, d=3, k=3, seed=0, dtype=np.float64, spread=5.0):
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(k, d)) * spread
  z = rng.integers(0, k, n)
  return (means[z] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, (k, 1))[z]).astype(dtype)


def _close(a, b, tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------------------
# Exact EM over streamed batches.


@pytest.mark.parametrize("cov_type", ["full", pytest.param("diag", marks=pytest.mark.slow)])
def test_streamed_em_equals_in_memory_fit_from_memmap(x64, tmp_path, cov_type):
  x = blobs()
  path = tmp_path / "x.npy"
  np.save(path, x)
  mm = np.load(path, mmap_mode="r")
  key = jax.random.key(3)
  ref = gmm.fit(key, x, 3, cov_type, tol=1e-8)
  # init_size >= N: the initialisation is gmm.fit's own, on all rows; then 128-row batches.
  got = streaming.fit(key, mm, 3, cov_type, tol=1e-8, batch_size=128)
  assert int(got.n_iter) == int(ref.n_iter) and bool(got.converged)
  _close(got.params, ref.params, 1e-10)
  np.testing.assert_allclose(got.log_likelihood, ref.log_likelihood, rtol=1e-12)


def test_streamed_em_from_callable_with_weights_equals_weighted_fit(x64):
  x = blobs(seed=1)
  w = np.random.default_rng(1).uniform(0.2, 3.0, len(x))
  init = gmm.fit(jax.random.key(0), x, 3, "tied", max_iter=0).params

  def batches():  # uneven batches, as a reader of files of different lengths would give
    for a, b in ((0, 250), (250, 251), (251, 600)):
      yield x[a:b], w[a:b]

  ref = gmm.fit(jax.random.key(0), x, 3, "tied", init=init, sample_weight=w, tol=1e-9)
  got = streaming.fit(jax.random.key(0), batches, 3, "tied", init=init, tol=1e-9, batch_size=200)
  assert int(got.n_iter) == int(ref.n_iter)
  _close(got.params, ref.params, 1e-10)
  stats = streaming.streamed_stats(ref.params, batches, batch_size=200)
  direct = gmm.e_step(ref.params, x, w)
  _close(stats, direct, 1e-10)


def test_streamed_em_checks_its_batches(tmp_path):
  x = blobs(dtype=np.float32)
  x[500, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    streaming.fit(jax.random.key(0), x, 3, init_size=100, batch_size=128, max_iter=2)
  with pytest.raises(ValueError, match="2-D"):
    streaming.fit(jax.random.key(0), x[:, 0], 3)
  with pytest.raises(ValueError, match="init_max_iter"):
    streaming.fit(jax.random.key(0), x[:400], 3, n_init=2)


def test_subsample_is_uniform_without_replacement_and_ordered():
  x = np.arange(1000.0)[:, None]
  xs, _ = streaming.subsample(jax.random.key(0), x, 100)
  assert xs.shape == (100, 1) and len(np.unique(xs)) == 100 and np.all(np.diff(xs[:, 0]) > 0)

  def batches():
    for i in range(0, 1000, 70):
      yield x[i:i + 70]

  ys, _ = streaming.subsample(jax.random.key(0), batches, 100, batch_size=64)
  assert ys.shape == (100, 1) and len(np.unique(ys)) == 100 and np.all(np.diff(ys[:, 0]) > 0)
  assert ys.min() < 200 and ys.max() > 800  # from the whole stream, not its head
  all_rows, _ = streaming.subsample(jax.random.key(0), batches, 5000, batch_size=64)
  np.testing.assert_array_equal(all_rows, x)


# ----------------------------------------------------------------------------------------------
# Stepwise online EM.


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
def test_recenter_stats_against_brute_force(x64, cov_type):
  x = blobs(n=50, seed=2)
  rng = np.random.default_rng(0)
  params = gmm.GMMParams(jnp.ones(3) / 3, jnp.asarray(rng.normal(size=(3, 3))),
                         jnp.asarray(np.stack([np.eye(3) * 2] * 3)), "full")
  params = params.replace(covariances=gmm.fit(jax.random.key(0), x, 3, "full", init=params,
                                               max_iter=0).params.covariances)
  params = gmm.GMMParams(params.weights, params.means, {
      "full": params.covariances, "tied": params.covariances[0],
      "diag": jnp.diagonal(params.covariances, axis1=1, axis2=2),
      "spherical": jnp.ones(3)}[cov_type], cov_type)
  stats = gmm.e_step(params, x)
  new_centers = rng.normal(size=(3, 3))
  got = online.recenter_stats(stats, params.means, new_centers, cov_type)
  r = np.asarray(gmm.posterior(params, x))
  diff = x[None] - new_centers[:, None]  # (K, N, D)
  s1 = np.einsum("nk,knd->kd", r, diff)
  s2 = np.einsum("nk,knd,kne->kde", r, diff, diff)
  s2 = {"full": s2, "tied": s2.sum(0), "diag": np.diagonal(s2, axis1=1, axis2=2),
        "spherical": np.diagonal(s2, axis1=1, axis2=2)}[cov_type]
  np.testing.assert_allclose(got.sum_x, s1, rtol=1e-10, atol=1e-9)
  np.testing.assert_allclose(got.sum_xx, s2, rtol=1e-10, atol=1e-9)


def _true_mixture():
  return gmm.GMMParams(jnp.array([0.3, 0.3, 0.4]), jnp.array([[0., 0.], [4., 0.], [0., 4.]]),
                       jnp.array([[[1., .3], [.3, 1.]], [[1., 0.], [0., .5]], [[.6, 0.], [0., 1.]]]),
                       "full")


def test_online_em_one_pass_reaches_the_batch_fit():
  x, _ = gmm.sample(jax.random.key(0), _true_mixture(), 5000)
  x = np.asarray(x)
  init = gmm.fit(jax.random.key(1), x[:500], 3, max_iter=0).params
  batch = gmm.fit(jax.random.key(1), x, 3, init=init)
  one_pass = online.fit(jax.random.key(2), x, 3, init=init, batch_size=100)
  assert one_pass.num_batches == 50 and one_pass.log_likelihood.shape == (50,)
  ll_batch = float(jnp.mean(gmm.log_marginal(batch.params, x)))
  ll_online = float(jnp.mean(gmm.log_marginal(one_pass.params, x)))
  assert ll_batch - 0.01 < ll_online <= ll_batch + 1e-4, (ll_online, ll_batch)
  order = lambda m: np.asarray(m)[np.argsort(np.asarray(m) @ [1.0, 10.0])]  # pylint: disable=unnecessary-lambda-assignment
  np.testing.assert_allclose(order(one_pass.params.means), order(batch.params.means), atol=0.1)
  # Weights of the running statistics sum to one: they are averages per unit weight.
  np.testing.assert_allclose(float(jnp.sum(one_pass.state.stats.counts)), 1.0, rtol=1e-5)


def test_online_update_eager_equals_jit_and_first_step_is_a_batch_em_step(x64):
  x = blobs(n=64, d=2, seed=4)
  params = gmm.GMMParams(jnp.array([0.2, 0.3, 0.5]), jnp.asarray(x[:3]),
                         jnp.stack([jnp.eye(2) * s for s in (1.0, 2.0, 3.0)]), "full")
  state = online.init_state(params)
  jitted, ll_jit = jax.jit(online.update)(state, x)
  with jax.disable_jit():
    eager, ll_eager = online.update(state, x)
  _close(jitted, eager, 1e-10)
  np.testing.assert_allclose(ll_jit, ll_eager, rtol=1e-12)
  # rho_1 = 1: the first update is one EM step on the batch.
  em_params, em_ll = gmm.em_step(params, x)
  _close(jitted.params, em_params, 1e-10)
  np.testing.assert_allclose(ll_jit, em_ll, rtol=1e-12)
  # After the M-step the statistics are about the new means: their first moments vanish.
  np.testing.assert_allclose(jitted.stats.sum_x, 0, atol=1e-12)
  np.testing.assert_allclose(online.step_size(jnp.array([1, 2, 3]), 0.6, 2.0),
                             [1.0, 4.0 ** -0.6, 5.0 ** -0.6])


def test_online_em_rejects_bad_step_sizes():
  x = blobs(n=100, dtype=np.float32)
  for kappa in (0.5, 1.2):
    with pytest.raises(ValueError, match="kappa"):
      online.fit(jax.random.key(0), x, 2, kappa=kappa)


# ----------------------------------------------------------------------------------------------
# Mini-batch K-means.


def test_minibatch_update_is_a_running_weighted_mean(x64):
  rng = np.random.default_rng(0)
  c0 = rng.normal(size=(3, 2)) * 3
  state = minibatch.init_state(c0)
  seen = [[] for _ in range(3)]
  centroids = c0.copy()
  for b in range(4):
    xb = rng.normal(size=(20, 2)) * 3
    wb = rng.uniform(0.5, 2, 20)
    state, _ = minibatch.update(state, xb, wb)
    labels = np.argmin(((xb[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    for k in range(3):
      seen[k] += [(xb[i], wb[i]) for i in np.nonzero(labels == k)[0]]
      if seen[k]:  # Sculley's centre: the weighted mean of all points it has been given
        centroids[k] = (sum(w * p for p, w in seen[k]) / sum(w for _, w in seen[k]))
    np.testing.assert_allclose(state.centroids, centroids, rtol=1e-10)
  np.testing.assert_allclose(state.counts, [sum(w for _, w in s) for s in seen], rtol=1e-12)


def test_minibatch_kmeans_reaches_the_lloyd_fit(tmp_path):
  x = blobs(n=4000, d=4, k=5, seed=5, dtype=np.float32)
  lloyd = kmeans.fit(jax.random.key(0), x, 5, n_init=3)
  mb = minibatch.fit(jax.random.key(0), x, 5, batch_size=256, num_steps=200, n_init=3)
  assert mb.batch_inertia.shape == (200,)
  assert float(mb.inertia) < 1.02 * float(lloyd.inertia)
  path = tmp_path / "x.npy"
  np.save(path, x)
  streamed = minibatch.fit(jax.random.key(0), str(path), 5, batch_size=256, num_epochs=2,
                           n_init=3)
  assert streamed.num_steps == 32
  assert float(kmeans.inertia(x, streamed.centroids)) < 1.02 * float(lloyd.inertia)


# ----------------------------------------------------------------------------------------------
# Many fits at once: vmap.


def _ragged(num, n_max, seed=0):
  """num data sets of 150 or n_max rows, padded to n_max rows with weight 0 (two sizes only,
  so that the separate reference fits compile twice, not once per data set)."""
  sizes = np.where(np.arange(num) % 2, 150, n_max)
  xs = np.zeros((num, n_max, 2), np.float32)
  ws = np.zeros((num, n_max), np.float32)
  for i, n in enumerate(sizes):
    xs[i, :n] = blobs(n=n, d=2, seed=seed * 1000 + i, dtype=np.float32)
    ws[i, :n] = 1
  return xs, ws, sizes


def test_vmapped_gmm_fits_equal_separate_fits():
  xs = np.stack([blobs(n=200, d=2, seed=s, dtype=np.float32) for s in range(50)])
  keys = jax.random.split(jax.random.key(0), 50)
  fit = lambda k, x: gmm.fit(k, x, 3, max_iter=50)  # pylint: disable=unnecessary-lambda-assignment
  batched = jax.jit(jax.vmap(fit))(keys, xs)
  assert batched.params.means.shape == (50, 3, 2)
  for i in range(0, 50, 10):
    single = fit(keys[i], xs[i])
    assert int(batched.n_iter[i]) == int(single.n_iter)
    _close(jax.tree.map(lambda a: a[i], batched.params), single.params, 2e-4)


def test_vmapped_ragged_gmm_fits_equal_fits_of_the_unpadded_data():
  xs, ws, sizes = _ragged(12, 200)
  keys = jax.random.split(jax.random.key(1), 12)
  fit = lambda k, x, w: gmm.fit(k, x, 3, "diag", init="k-means++", max_iter=50, sample_weight=w)  # pylint: disable=unnecessary-lambda-assignment
  batched = jax.vmap(fit)(keys, xs, ws)
  for i in range(0, 12, 3):
    single = gmm.fit(keys[i], xs[i, :sizes[i]], 3, "diag", init="k-means++", max_iter=50)
    assert int(batched.n_iter[i]) == int(single.n_iter)
    _close(jax.tree.map(lambda a: a[i], batched.params), single.params, 2e-4)


def test_vmapped_kmeans_fits_equal_separate_fits_also_ragged():
  xs, ws, sizes = _ragged(12, 200, seed=2)
  keys = jax.random.split(jax.random.key(2), 12)
  batched = jax.vmap(lambda k, x, w: kmeans.fit(k, x, 3, sample_weight=w))(keys, xs, ws)
  assert batched.centroids.shape == (12, 3, 2) and batched.labels.shape == (12, 200)
  for i in range(0, 12, 3):
    padded = kmeans.fit(keys[i], xs[i], 3, sample_weight=ws[i])
    np.testing.assert_allclose(batched.centroids[i], padded.centroids, rtol=1e-5, atol=1e-5)
    # The real rows alone: the same centroids (zero-weight rows move no centroid).
    alone = kmeans.fit(keys[i], xs[i, :sizes[i]], 3)
    np.testing.assert_allclose(batched.centroids[i], alone.centroids, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(batched.labels[i, :sizes[i]], alone.labels)


def test_vmap_still_checks_shapes():
  xs = np.zeros((4, 10, 2), np.float32)
  with pytest.raises(ValueError, match="num_components"):
    jax.vmap(lambda k, x: gmm.fit(k, x, 11))(jax.random.split(jax.random.key(0), 4), xs)
  with pytest.raises(ValueError, match="sample_weight"):
    jax.vmap(lambda x, w: kmeans.fit(jax.random.key(0), x, 2, sample_weight=w))(
        xs, np.ones((4, 9), np.float32))


# ----------------------------------------------------------------------------------------------
# Sharding helpers and the sharded code path on a one-device mesh (many devices: subprocesses in
# test_distributed.py).


def test_layouts_and_process_rows():
  assert sharding.layout_for(1003, 8, 32) == sharding.RowLayout(1003, 8, 128)
  assert sharding.layout_for(16, 8).padded_rows == 16
  blocks = [sharding.process_rows(10, p, 3) for p in range(3)]
  assert [(b.start, b.stop) for b in blocks] == [(0, 4), (4, 8), (8, 10)]
  assert sharding.process_rows(2, 2, 3) == slice(2, 2)


def test_one_device_mesh_runs_the_sharded_code_path(x64):
  mesh = sharding.data_mesh(jax.devices()[:1])
  x = blobs(n=301)
  w = np.random.default_rng(0).uniform(0.5, 2, len(x))
  xs, ws = sharding.shard_rows(x, mesh, w)
  assert xs.shape == (301, 3) and float(ws.sum()) == pytest.approx(w.sum())
  assert sharding.mesh_of(xs) is None  # one device along the axis: an ordinary fit
  assert sharding.mesh_of(x, mesh) == (mesh, "data")
  key = jax.random.key(0)
  a = gmm.fit(key, x, 3, "diag", init="k-means++", sample_weight=w)
  b = gmm.fit(key, x, 3, "diag", init="k-means++", sample_weight=w, mesh=mesh)
  assert int(a.n_iter) == int(b.n_iter)
  _close(a.params, b.params, 1e-10)
  with pytest.raises(ValueError, match="axis_name"):
    gmm.fit(key, x, 3, mesh=mesh, axis_name="model")


def test_reduction_hook_is_local_without_a_shard_and_a_collective_with_one(x64):
  x = np.random.default_rng(1).normal(size=(10, 3))
  xj, valid = jnp.asarray(x), np.arange(10) < 7
  m, v = sharding.mean_and_variance(xj, jnp.asarray(valid), None)
  np.testing.assert_allclose(m, x[:7].mean(0), rtol=1e-12)
  np.testing.assert_allclose(v, x[:7].var(0), rtol=1e-12)
  m, v = sharding.mean_and_variance(xj, None, None)
  np.testing.assert_allclose(m, x.mean(0), rtol=1e-12)
  np.testing.assert_allclose(v, x.var(0), rtol=1e-12)
  assert sharding.psum(xj, None) is xj and sharding.gather(xj, None) is xj
  np.testing.assert_array_equal(sharding.take(xj, jnp.array([4, 1]), None), x[[4, 1]])
  assert int(sharding.device_index(None)) == 0
  # Inside shard_map over a one-device mesh: the collectives over 7 real rows padded to 8.
  mesh = sharding.data_mesh(jax.devices()[:1])
  layout = sharding.layout_for(7, 1, multiple=4)
  shard = sharding.Shard("data", layout)
  assert layout.padded_rows == 8

  def local(xb):
    _, ok = sharding.local_rows("data", layout, xb.shape[0])
    mean, _ = sharding.mean_and_variance(xb, ok, shard)
    return (mean, sharding.psum(jnp.sum(jnp.where(ok[:, None], xb, 0)), shard),
            sharding.take(xb, jnp.array([6, 0]), shard), sharding.gather(xb[:, 0], shard))

  xp = sharding.pad_rows(x[:7], 8)
  assert isinstance(xp, np.ndarray) and xp.shape == (8, 3)
  assert isinstance(sharding.pad_rows(xj, 12), jax.Array)
  spec = jax.sharding.PartitionSpec
  mean, total, rows, col = jax.shard_map(local, mesh=mesh, in_specs=spec("data"),
                                         out_specs=spec(), check_vma=False)(jnp.asarray(xp))
  np.testing.assert_allclose(mean, x[:7].mean(0), rtol=1e-12)
  np.testing.assert_allclose(total, x[:7].sum(), rtol=1e-12)
  np.testing.assert_array_equal(rows, x[[6, 0]])
  np.testing.assert_array_equal(col, x[:7, 0])
  # One shape-only stand-in for a global array in the door checks.
  with pytest.raises(ValueError, match="2-D"):
    sharding.check_data(sharding.ShapeOnly((5,)))
  sharding.check_data(sharding.ShapeOnly((5, 2)))
  with pytest.raises(ValueError, match="NaN"):
    sharding.check_data(np.array([[np.nan]]))


# ----------------------------------------------------------------------------------------------
# Peak memory of streamed EM stays flat as N grows.

_RSS_SCRIPT = r"""
import resource, sys
import numpy as np, jax
from lvmjax import gmm
from lvmjax.gmm import streaming
path, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 8))
offset = mm.offset
del mm
with open(path, "r+b") as f:  # plain writes: no mapped pages count as resident memory
  f.seek(offset)
  for i in range(0, n, 65536):
    m = min(65536, n - i)
    rows = rng.normal(size=(m, 8)) + rng.integers(0, 4, (m, 1)) * 3
    f.write(rows.astype(np.float32).tobytes())
init = gmm.fit(jax.random.key(0), np.load(path, mmap_mode="r")[:2000], 4, max_iter=0).params
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = streaming.fit(jax.random.key(0), np.load(path, mmap_mode="r"), 4, init=init, max_iter=2,
                  tol=0.0, batch_size=65536)
assert int(r.n_iter) == 2
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_streamed_em_peak_memory_is_flat_in_n(tmp_path):
  peaks = []
  for n in (100_000, 1_000_000):  # data: 3.2 MB and 32 MB of float32
    out = processes.run([sys.executable, "-c", _RSS_SCRIPT, tmp_path / f"x{n}.npy", n],
                        timeout=600)
    peaks.append(int(out.stdout.split()[-1]) / 1024)  # ru_maxrss is in KiB on Linux: MiB
  # Holding the 1e6-row array would add 29 MB over the small run; streaming adds (almost) none.
  assert peaks[1] - peaks[0] < 12, peaks


def test_use_cpu_cores_before_and_after_the_backend_starts():
  """One host device per requested core in a fresh process; a clear error once JAX has run."""
  code = ("import jax\nfrom lvmjax import sharding\nsharding.use_cpu_cores(3)\n"
          "assert jax.device_count() == 3, jax.devices()\n"
          "try:\n  sharding.use_cpu_cores(2)\nexcept ValueError as e:\n"
          "  assert 'before the first JAX computation' in str(e)\nelse:\n  raise SystemExit(1)\n"
          "print('ok')\n")
  out = processes.python(code, timeout=300, env=processes.environment(drop=("XLA_FLAGS",)))
  assert "ok" in out.stdout, out.stdout[-2000:]
  with pytest.raises(ValueError, match="num_devices"):
    sharding.use_cpu_cores(0)
