"""lvmjax.checkpoint, lvmjax.progress, lvmjax.distributed and lvmjax.plotting."""
import io
import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lvmjax import checkpoint
from lvmjax import distributed
from lvmjax import plotting
from lvmjax import progress


def _state(v):
  return {"params": {"w": jnp.full((3, 2), v, jnp.float32), "b": jnp.arange(2, dtype=jnp.int32)},
          "step": jnp.asarray(int(v), jnp.int32),
          "key": jax.random.key_data(jax.random.key(int(v)))}


def test_save_restore_roundtrip_and_max_to_keep(tmp_path):
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    assert ckpt.latest_step() is None and ckpt.restore_meta() is None
    for s in (1, 2, 3):
      assert ckpt.save(s, _state(s), {"position": [0, s], "config": {"lr": 1e-3}})
    assert not ckpt.save(3, _state(9), {})  # an existing step is not overwritten
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 3 and ckpt.all_steps() == [2, 3]
    state, meta = ckpt.restore(_state(0))
    assert meta == {"position": [0, 3], "config": {"lr": 1e-3}}
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(_state(3))):
      assert got.dtype == want.dtype
      np.testing.assert_array_equal(got, want)
    older, _ = ckpt.restore(_state(0), step=2)
    np.testing.assert_array_equal(older["params"]["w"], 2.0)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]


def test_unfinished_save_is_invisible(tmp_path):
  """Orbax writes into a temporary directory and renames it when complete: a save killed midway
  leaves a temporary directory, which the next start ignores (and removes)."""
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(5, _state(5), {"position": [0, 5]})
  partial = tmp_path / "checkpoints" / "10.orbax-checkpoint-tmp-1234567"
  partial.mkdir()
  (partial / "garbage").write_text("half a checkpoint")
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 5
    _, meta = ckpt.restore(_state(0))
    assert meta["position"] == [0, 5]
  assert not partial.exists()


def test_read_only_reader_leaves_a_save_in_progress_alone(tmp_path, caplog):
  """Evaluating a run that is still training must not remove the save it is writing (a writer's
  start removes unfinished temporary directories; that crashed a live run). A read-only
  checkpointer reads the finished steps and removes, creates and saves nothing."""
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(5, _state(5), {"position": [0, 5]})
  in_progress = tmp_path / "checkpoints" / "10.orbax-checkpoint-tmp-1234567"
  in_progress.mkdir()
  (in_progress / "part").write_text("being written by the training process")
  with caplog.at_level(logging.WARNING):
    reader = checkpoint.Checkpointer(tmp_path, read_only=True)
  assert not [r for r in caplog.records if "read only" in r.getMessage()]  # asked for, not warned
  with reader:
    assert reader.latest_step() == 5 and reader.all_steps() == [5]
    state, meta = reader.restore(_state(0))
    assert meta["position"] == [0, 5]
    np.testing.assert_array_equal(state["params"]["w"], _state(5)["params"]["w"])
    with pytest.raises(ValueError, match="read-only"):
      reader.save(6, _state(6), {"position": [0, 6]})
    with pytest.raises(ValueError, match=r"No checkpoint of step 10 .* holds steps \[5\]"):
      reader.restore(_state(0), 10)  # the unfinished save is not a checkpoint
    with pytest.raises(ValueError, match="No checkpoint of step 7"):
      reader.restore_meta(7)
  assert (in_progress / "part").exists()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10.orbax-checkpoint-tmp-1234567", "5"]
  with checkpoint.Checkpointer(tmp_path / "elsewhere", read_only=True) as reader:
    assert reader.latest_step() is None
  assert not (tmp_path / "elsewhere").exists()


def test_restore_into_wrong_shapes_fails_clearly(tmp_path):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, {"w": jnp.zeros((3,))}, {})
    ckpt.wait_until_finished()
    with pytest.raises(ValueError, match="does not fit"):
      ckpt.restore({"w": jnp.zeros((4, 2))})
    with pytest.raises(ValueError, match="No checkpoint"):
      checkpoint.Checkpointer(tmp_path / "empty").restore({"w": jnp.zeros(3)})


def test_config_differences():
  a = ml_collections.ConfigDict({"lr": 1e-3, "hidden": (200, 200), "num_steps": 10,
                                 "data": {"name": "mnist", "data_dir": "/a"}})
  b = ml_collections.ConfigDict({"lr": 1e-3, "hidden": [200, 200], "num_steps": 99,
                                 "data": {"name": "mnist", "data_dir": "/b"}})
  assert checkpoint.config_differences(a, b) == {}  # resumable keys and tuple/list ignored
  b.lr = 3e-4
  b.data.name = "fashion_mnist"
  diff = checkpoint.config_differences(a, b)
  assert diff == {"lr": (1e-3, 3e-4), "data.name": ("mnist", "fashion_mnist")}
  with pytest.raises(ValueError, match=r"lr: checkpoint has 0.001, this run has 0.0003"):
    checkpoint.check_config_matches(a, b, "/w")


def test_config_differences_with_defaults_for_keys_added_later():
  saved = {"lr": 0.1, "model": {"k": 3}}                       # saved before "new" existed
  now = {"lr": 0.1, "model": {"k": 3, "new": True}}
  assert checkpoint.config_differences(saved, now) == {"model.new": ("<absent>", True)}
  assert checkpoint.config_differences(saved, now, defaults={"model.new": True}) == {}
  changed = {"lr": 0.1, "model": {"k": 3, "new": False}}
  assert checkpoint.config_differences(saved, changed, defaults={"model.new": True}) == {
      "model.new": (True, False)}


def test_metrics_writer(tmp_path):
  w = progress.MetricsWriter(tmp_path)
  for s in (10, 20, 30):
    w.write(s, {"loss": np.float32(s / 10), "count": np.int32(3)}, note="x")
  w.write(40, {"loss": float("nan")})
  records = progress.read_metrics(tmp_path)
  assert [r["step"] for r in records] == [10, 20, 30, 40]
  assert records[0] == {"step": 10, "loss": 1.0, "count": 3, "note": "x"}
  assert records[3]["loss"] is None  # strict JSON: no NaN
  for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 50, "lo')  # a line torn by a kill
  assert len(progress.read_metrics(tmp_path)) == 4
  w.truncate_after(20)
  assert [r["step"] for r in progress.read_metrics(tmp_path)] == [10, 20]
  progress.MetricsWriter(tmp_path / "other", enabled=False).write(1, {"a": 1})
  assert not (tmp_path / "other" / "metrics.jsonl").exists()


def test_write_config_json(tmp_path):
  c = ml_collections.ConfigDict({"a": 1, "b": (1, 2), "c": {"d": "x"}})
  progress.write_config_json(tmp_path, c)
  assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1, "b": [1, 2],
                                                                 "c": {"d": "x"}}


class _Tty(io.StringIO):

  def isatty(self):
    return True


def test_progress_log_mode_terminal_mode_and_quiet():
  log = io.StringIO()
  p = progress.Progress(100, desc="train", stream=log)
  for s in range(1, 101):
    p.update(s, {"loss": 1.0 / s} if s % 50 == 0 else None)
  p.close()
  lines = log.getvalue().splitlines()
  assert len(lines) == 2 and lines[0].startswith("train step 50/100  loss 0.02")
  assert "steps/s" in lines[1] and "left" in lines[1]
  tty = _Tty()
  p = progress.Progress(10, desc="t", stream=tty, refresh_s=0.0)
  for s in range(1, 11):
    p.update(s, {"loss": 2.0})
  p.close()
  out = tty.getvalue()
  assert "\r|" in out and "100%" in out and out.endswith("\n")
  quiet = io.StringIO()
  p = progress.Progress(10, stream=quiet, quiet=True)
  p.update(5, {"loss": 1.0})
  p.close()
  assert quiet.getvalue() == ""
  assert progress.format_duration(3725) == "1:02:05" and progress.format_duration(math.nan) == "?"


def test_distributed_single_process():
  assert distributed.maybe_initialize() is False
  assert distributed.maybe_initialize(None, 1, 0) is False
  assert distributed.is_primary()
  with pytest.raises(ValueError, match="coordinator_address"):
    distributed.maybe_initialize(None, num_processes=2, process_id=1)


def test_plotting_helpers(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 5)) * np.array([5.0, 2.0, 0.1, 0.1, 0.1])
  x2, mean, basis = plotting.project_2d(x)
  # The first principal direction is the first axis (largest variance), up to sign.
  assert abs(abs(basis[0, 0]) - 1.0) < 1e-2 and abs(abs(basis[1, 1]) - 1.0) < 1e-2
  np.testing.assert_allclose(x2, (x - mean) @ basis.T)
  covs = {"full": np.stack([np.eye(5) * 2, np.eye(5)]), "tied": np.eye(5) * 3,
          "diag": np.ones((2, 5)) * 4, "spherical": np.array([5.0, 6.0])}
  for kind, c in covs.items():
    full = plotting.full_covariances(c, kind, 2, 5)
    assert full.shape == (2, 5, 5)
    fig = plotting.plot_gmm(x, np.array([0.5, 0.5]), x[:2], c, kind, labels=rng.integers(0, 3, 200))
    path = plotting.save_figure(fig, tmp_path / f"{kind}.png")
    assert path.stat().st_size > 5000
  np.testing.assert_allclose(plotting.full_covariances(covs["spherical"], "spherical", 2, 5)[1],
                             6 * np.eye(5))
  grid = plotting.image_grid(np.ones((3, 4)), (2, 2), num_cols=2)
  assert grid.shape == (7, 7) and grid.sum() == 3 * 4 + 0.5 * (49 - 12)
  for fig in (plotting.plot_latent_space(rng.normal(size=(50, 1))),
              plotting.plot_training_curves([{"step": 1, "loss": 2.0}, {"step": 2, "loss": None}]),
              plotting.plot_interpolation(rng.random((10, 4)), (2, 2))):
    assert plotting.save_figure(fig, tmp_path / "x.png").stat().st_size > 1000
