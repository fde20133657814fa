"""The benchmark scripts run, and divide by the work they time (no timings are asserted)."""
import json
import sys

from tests import processes


def test_per_iteration_divides_by_the_iterations_a_fit_ran():
  # A library that stops after 4 iterations (as gmmx at a NaN log-likelihood) and costs 1 s of a
  # fake clock per iteration plus 0.5 s per call: asked for 10, it ran 3 more than the 1-iteration
  # call, so its time per iteration is 1 s, not 3 s / 9.
  out = processes.python("""
      import types
      from experiments import benchmark_gmm as b
      clock = [0.0]
      b.time.perf_counter = lambda: clock[0]
      def run(iters):
        ran = min(iters, 4)
        clock[0] += 0.5 + ran
        return types.SimpleNamespace(n_iter=ran)
      fixed = {}
      sec, _, result = b.per_iteration(run, 10, 2, fixed, iterations_run=lambda r: r.n_iter)
      assert abs(sec - 1.0) < 1e-9 and result.n_iter == 4, sec
      assert fixed["iterations_run"] == 4 and abs(fixed["fixed_s"] - 0.5) < 1e-9, fixed
      sec, _, _ = b.per_iteration(run, 4, 1)  # a library that runs what it is asked
      assert abs(sec - 1.0) < 1e-9, sec
      print("ok")
      """, timeout=300)
  assert "ok" in out.stdout, out.stdout[-3000:]


def test_benchmark_gmm_smoke_run(tmp_path):
  path = tmp_path / "bench.json"
  out = processes.run(
      [sys.executable, "-m", "experiments.benchmark_gmm", "--sizes=2048x8x4",
       "--kmeans_size=8192x8x8", "--iters=3", "--sklearn_iters=3", "--kmeans_iters=3",
       "--repeats=1", "--small_fits=0", "--nogmmx", f"--json_out={path}"], timeout=600)
  result = json.loads(path.read_text())
  (row,) = result["em"]
  assert (row["N"], row["D"], row["K"]) == (2048, 8, 4)
  # The same EM iterations as scikit-learn's from the same start (float32).
  assert row["ll_diff_vs_sklearn"] < 1e-3
  assert result["kmeans"]["N"] == 8192
  assert "| 2,048 | 8 | 4 | lvmjax, default call" in out.stdout
