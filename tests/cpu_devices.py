"""Runs a test module's function in a fresh Python with N simulated CPU devices, with a timeout.

The device count of JAX's CPU backend is fixed when JAX starts, so a mesh test of several devices
runs in its own process; the timeout turns a hang into a failure instead of a stalled suite. The
function prints ``RESULT <json>``; :func:`run` returns the parsed JSON.
"""
import json
import os
import pathlib
import subprocess
import sys

_TESTS = pathlib.Path(__file__).resolve().parent


def run(module: str, function: str, num_devices: int, timeout: float = 300) -> dict:
  """``tests/<module>.py``'s ``function()`` on ``num_devices`` CPU devices; its RESULT JSON."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
                      + f" --xla_force_host_platform_device_count={num_devices}"}
  code = f"import sys; sys.path.insert(0, {str(_TESTS)!r}); import {module}; {module}.{function}()"
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=timeout, cwd=_TESTS.parent)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.split("RESULT ", 1)[1])
