"""Child processes for the tests, each with a time limit, so that a hang fails a test instead of
stalling the suite.

A test runs a child when what it checks is fixed when JAX starts (the CPU device count, the
persistent cache), when several processes must run at once (``jax.distributed``, a mesh that could
deadlock), or when it runs a command as a user would (a launcher, ``sphinx-build``, a benchmark).

* :func:`environment`: this process's environment for a child: JAX on the CPU, the repository
  importable, variables removed or set.
* :func:`run` and :func:`python`: one command (or ``python -c code``) to its end; by default it
  must exit 0, else the test fails with the end of its output.
* :func:`result`: the JSON a child printed after ``RESULT``.
* :func:`on_cpu_devices`: a test module's function in a fresh Python with N simulated CPU devices.
* :func:`run_together`: several commands at once, all killed if one hangs.
* :func:`free_port`: a free local port (a ``jax.distributed`` coordinator's).
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any, Sequence

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
_TESTS = REPO / "tests"


def environment(*, drop: Sequence[str] = (), importable: bool = True,
                **changes: str) -> dict[str, str]:
  """This process's environment for a child.

  Args:
    drop: variables removed (e.g. ``XLA_FLAGS``, which would fix the child's device count).
    importable: put the repository first on ``PYTHONPATH`` (``experiments``, ``configs`` and
      ``tests`` importable from any working directory); False for a test of a launcher's own path
      handling.
    **changes: variables set last (they win over ``JAX_PLATFORMS=cpu`` too).

  Returns:
    The environment, with ``JAX_PLATFORMS=cpu``: nothing in the tests may need an accelerator.
  """
  env = {k: v for k, v in os.environ.items() if k not in drop}
  if importable:
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + paths)
  env["JAX_PLATFORMS"] = "cpu"
  env.update(changes)
  return env


def _tail(text: str | None, chars: int) -> str:
  return (text or "")[-chars:]


def run(args: Sequence[Any], *, timeout: float, cwd: Any = REPO, env: dict | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
  """Runs ``args`` to its end, its output captured as text.

  Args:
    args: the command (items converted with ``str``).
    timeout: seconds; past them the child is killed and the test fails (``TimeoutExpired``).
    cwd: the working directory (the repository's root by default).
    env: the child's environment (default :func:`environment`).
    check: fail the test, with the end of the child's output, unless it exits 0.

  Returns:
    The ``subprocess.CompletedProcess``.
  """
  args = [str(a) for a in args]
  proc = subprocess.run(args, cwd=cwd, env=environment() if env is None else env,
                        capture_output=True, text=True, timeout=timeout, check=False)
  if check:
    assert proc.returncode == 0, (f"{' '.join(args)[:300]} exited {proc.returncode}:\n"
                                  f"{_tail(proc.stderr, 4000)}\n{_tail(proc.stdout, 1000)}")
  return proc


def python(code: str, *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
  """:func:`run` of ``python -c code`` (``code`` dedented) in this process's interpreter."""
  return run([sys.executable, "-c", textwrap.dedent(code)], timeout=timeout, **kwargs)


def result(proc: subprocess.CompletedProcess) -> Any:
  """The JSON a child printed after ``RESULT `` (the rest of that line)."""
  assert "RESULT " in proc.stdout, (f"no RESULT line:\n{_tail(proc.stdout, 2000)}\n"
                                    f"{_tail(proc.stderr, 2000)}")
  return json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])


def on_cpu_devices(module: str, function: str, num_devices: int, timeout: float = 300) -> Any:
  """``tests/<module>.py``'s ``function()`` in a fresh Python with ``num_devices`` CPU devices.

  The device count of JAX's CPU backend is fixed when JAX starts, so a test of several devices
  runs in its own process. ``function`` prints ``RESULT <json>``; returns the parsed JSON.
  """
  flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={num_devices}"
  code = f"import sys; sys.path.insert(0, {str(_TESTS)!r}); import {module}; {module}.{function}()"
  return result(python(code, timeout=timeout, env=environment(XLA_FLAGS=flags)))


def run_together(commands: Sequence[Sequence[Any]], log_dir: pathlib.Path, *,
                 timeout: float | None, stall: float | None = None, cwd: Any = REPO,
                 env: dict | None = None) -> list[str]:
  """Runs the commands at once, each writing stdout and stderr to ``log_dir/log<i>.txt``.

  The test fails, with the end of every log, when one command exits non-zero, when they are not
  all done after ``timeout`` seconds, or (with ``stall``) when no log has grown for ``stall``
  seconds (for children that print a line per finished case, so that a long series of cases
  needs no total limit: ``timeout=None``); every command still running is then killed.

  Returns:
    The logs' texts, in the order of ``commands``.
  """
  assert timeout is not None or stall is not None, "a time limit is required"
  paths = [pathlib.Path(log_dir) / f"log{i}.txt" for i in range(len(commands))]
  logs = [open(path, "w") for path in paths]  # pylint: disable=consider-using-with
  env = environment() if env is None else env
  procs = []
  failure = None
  try:
    for command, log in zip(commands, logs):
      procs.append(subprocess.Popen([str(a) for a in command], cwd=cwd, env=env, stdout=log,
                                    stderr=subprocess.STDOUT))
    start = since = time.monotonic()
    size = -1
    while any(p.poll() is None for p in procs):
      now = time.monotonic()
      grown = sum(path.stat().st_size for path in paths)
      if grown != size:
        size, since = grown, now
      if timeout is not None and now - start > timeout:
        failure = f"not done after {timeout} s"
        break
      if stall is not None and now - since > stall:
        failure = f"no output for {stall} s (deadlocked?)"
        break
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for log in logs:
      log.close()
  texts = [path.read_text() for path in paths]
  tails = "\n".join(f"--- {' '.join(map(str, c))[:200]}\n{_tail(t, 6000)}"
                    for c, t in zip(commands, texts))
  if failure:
    pytest.fail(f"{failure}:\n{tails}")
  codes = [p.returncode for p in procs]
  assert codes == [0] * len(procs), f"exit codes {codes}:\n{tails}"
  return texts


def free_port() -> int:
  """A local TCP port that is free now (for a ``jax.distributed`` coordinator)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]
