"""The tests' own child-process helpers (tests/processes.py): a hung or failed child fails the test
and is killed, so that the suite never stalls on one."""
import subprocess
import sys
import time

import pytest

from tests import processes

_SLEEP = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]


def _sleeper(pid_file):
  """A child that writes its process id to ``pid_file``, says so, and sleeps for a minute."""
  code = ("import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
          "print('started', flush=True); time.sleep(60)")
  return [sys.executable, "-c", code, pid_file]


def _pid_alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split()[2] != "Z"
  except FileNotFoundError:
    return False


def test_environment_runs_children_on_the_cpu_with_the_repository_importable():
  env = processes.environment(drop=("HOME",), XLA_FLAGS="--x")
  assert env["JAX_PLATFORMS"] == "cpu" and env["XLA_FLAGS"] == "--x" and "HOME" not in env
  assert env["PYTHONPATH"].split(":")[0] == str(processes.REPO)
  out = processes.python("""
      import json, experiments, tests
      print("RESULT", json.dumps({"ok": True}))
      print("after")
      """, timeout=60, cwd="/")
  assert processes.result(out) == {"ok": True}


def test_a_failing_child_fails_the_test_with_its_output():
  with pytest.raises(AssertionError, match="boom"):
    processes.python("raise SystemExit('boom')", timeout=60)
  proc = processes.python("raise SystemExit(3)", timeout=60, check=False)
  assert proc.returncode == 3


def test_a_hung_child_is_killed_at_its_timeout():
  start = time.monotonic()
  with pytest.raises(subprocess.TimeoutExpired):
    processes.run(_SLEEP, timeout=2)
  assert time.monotonic() - start < 30


@pytest.mark.parametrize("limits", [dict(timeout=2), dict(timeout=None, stall=2)])
def test_run_together_kills_every_child_when_one_hangs(tmp_path, limits):
  done = [sys.executable, "-c", "print('finished')"]
  start = time.monotonic()
  with pytest.raises(pytest.fail.Exception, match="started") as failure:
    processes.run_together([done, _sleeper(tmp_path / "pid")], tmp_path, **limits)
  assert time.monotonic() - start < 30
  assert ("not done after 2 s" in str(failure.value)) == ("stall" not in limits)
  assert "finished" in (tmp_path / "log0.txt").read_text()
  assert not _pid_alive((tmp_path / "pid").read_text())  # the sleeper was killed


def test_run_together_reports_a_failed_child_and_returns_the_logs(tmp_path):
  ok = [sys.executable, "-c", "print('fine')"]
  assert processes.run_together([ok, ok], tmp_path, timeout=60) == ["fine\n", "fine\n"]
  bad = [sys.executable, "-c", "import sys; print('bad news'); sys.exit(2)"]
  with pytest.raises(AssertionError, match="(?s)exit codes \\[0, 2\\].*bad news"):
    processes.run_together([ok, bad], tmp_path, timeout=60)
