"""float64 NumPy references for the VAE tests (independent of JAX and flax)."""
import numpy as np


def mlp(p, h, out_names):
  """numpy forward pass of lvmjax's MLP (tanh hidden layers) in float64."""
  h = np.asarray(h, np.float64)
  i = 0
  while f"hidden_{i}" in p:
    h = np.tanh(h @ np.asarray(p[f"hidden_{i}"]["kernel"]) + np.asarray(p[f"hidden_{i}"]["bias"]))
    i += 1
  return [h @ np.asarray(p[n]["kernel"]) + np.asarray(p[n]["bias"]) for n in out_names]


def log_normal(z, mean, var):
  """log N(z; mean, diag(var)), summed over the last axis."""
  return np.sum(-0.5 * np.log(2 * np.pi * var) - 0.5 * np.square(z - mean) / var, axis=-1)
