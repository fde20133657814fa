"""Figures for GMM, K-means and VAE runs, as matplotlib ``Figure`` objects (numpy in, Figure out).

The figures are built without ``pyplot`` (``matplotlib.figure.Figure``), so they need no display,
leave no global state, and save through the Agg canvas; in a notebook, show one with
``display(fig)`` or by leaving it as a cell's last expression. :func:`save_figure` writes a PNG.
Data above two dimensions is drawn in the plane of its first two principal components.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import patches
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> pathlib.Path:
  """Writes ``fig`` as a PNG to ``path`` (creating directories) and returns the path."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=dpi, bbox_inches="tight")
  return path


def show(fig_or_path: Figure | str | os.PathLike) -> None:
  """Shows a figure (or a PNG file) inline in Jupyter/Colab; does nothing without IPython.

  Works for the pyplot-free figures of this module whatever the notebook's matplotlib backend.
  """
  try:
    from IPython.display import Image, display  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  if isinstance(fig_or_path, Figure):
    import io  # pylint: disable=g-import-not-at-top
    buf = io.BytesIO()
    fig_or_path.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    display(Image(buf.getvalue()))
  else:
    display(Image(filename=str(fig_or_path)))


def pca_basis(x: np.ndarray, num_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """The mean (D,) and the top principal directions (num_components, D) of ``x``."""
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  basis = vt[:num_components]
  if basis.shape[0] < num_components:  # fewer points than components: pad with zeros
    basis = np.concatenate([basis, np.zeros((num_components - basis.shape[0], x.shape[1]))])
  return mean, basis


def project_2d(x: np.ndarray, mean: np.ndarray | None = None,
               basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``x`` in two dimensions: itself when D <= 2, else its first two principal components.

  Returns:
    (x2 (N, 2), mean (D,), basis (2, D)) so that other points project as ``(y - mean) @ basis.T``.
  """
  x = np.asarray(x, np.float64)
  d = x.shape[1]
  if mean is None or basis is None:
    if d <= 2:
      mean, basis = np.zeros(d), np.eye(2, d)
    else:
      mean, basis = pca_basis(x, 2)
  return (x - mean) @ basis.T, mean, basis


def full_covariances(covariances: np.ndarray, covariance_type: str, num_components: int,
                     num_features: int) -> np.ndarray:
  """(K, D, D) covariances from scikit-learn's layout for "full", "tied", "diag" or "spherical"."""
  c = np.asarray(covariances, np.float64)
  eye = np.eye(num_features)
  if covariance_type == "full":
    return c
  if covariance_type == "tied":
    return np.broadcast_to(c, (num_components, num_features, num_features))
  if covariance_type == "diag":
    return c[:, :, None] * eye
  if covariance_type == "spherical":
    return c[:, None, None] * eye
  raise ValueError(f"Unknown covariance_type {covariance_type!r}.")


def _ellipse(ax, mean2, cov2, n_std, **kw):
  vals, vecs = np.linalg.eigh(cov2)
  vals = np.maximum(vals, 0.0)
  angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
  width, height = 2 * n_std * np.sqrt(vals[-1]), 2 * n_std * np.sqrt(vals[0])
  ax.add_patch(patches.Ellipse(mean2, width, height, angle=angle, **kw))


def _scatter(ax, x2, labels, size=None):
  size = size or (12 if len(x2) < 2000 else 3)
  if labels is None:
    ax.scatter(x2[:, 0], x2[:, 1], s=size, c="0.4", alpha=0.5, linewidths=0)
    return None
  labels = np.asarray(labels)
  top = int(labels.max()) if labels.size else 0
  cmap = "tab10" if top < 10 else ("tab20" if top < 20 else "viridis")
  return ax.scatter(x2[:, 0], x2[:, 1], s=size, c=labels, cmap=cmap, alpha=0.7, linewidths=0,
                    vmin=-0.5, vmax=top + 0.5 if top < 20 else None)


def plot_gmm(x: np.ndarray, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
             covariance_type: str = "full", labels: np.ndarray | None = None,
             assignments: np.ndarray | None = None, title: str | None = None,
             max_points: int = 3000) -> Figure:
  """The data with each component's 1- and 2-standard-deviation ellipse.

  Above two dimensions the data, means and covariances are projected on the data's first two
  principal components (covariances as ``P Σ Pᵀ``).

  Args:
    x: (N, D) data.
    weights, means, covariances: the mixture in scikit-learn's layout.
    covariance_type: "full", "tied", "diag" or "spherical".
    labels: optional (N,) integer classes to colour the points by (with a colour bar).
    assignments: optional (N,) component index of each point (e.g. the MAP component); points
      then take their component's ellipse colour (``labels`` is ignored).
    title: the axes title.
    max_points: draw at most this many points (a fixed random subset).

  Returns:
    The figure.
  """
  x = np.asarray(x, np.float64)
  means = np.asarray(means, np.float64)
  k, d = means.shape
  covs = full_covariances(covariances, covariance_type, k, d)
  x2, mean, basis = project_2d(x)
  if len(x2) > max_points:
    keep = np.random.default_rng(0).choice(len(x2), max_points, replace=False)
    x2 = x2[keep]
    labels = None if labels is None else np.asarray(labels)[keep]
    assignments = None if assignments is None else np.asarray(assignments)[keep]
  fig = Figure(figsize=(6, 5))
  ax = fig.add_subplot()
  if assignments is not None:
    sc = None
    ax.scatter(x2[:, 0], x2[:, 1], s=12 if len(x2) < 2000 else 3, linewidths=0, alpha=0.6,
               c=[f"C{int(a) % 10}" for a in np.asarray(assignments)])
  else:
    sc = _scatter(ax, x2, labels)
  m2 = (means - mean) @ basis.T
  c2 = basis @ covs @ basis.T
  w = np.asarray(weights, np.float64)
  colors = [f"C{i % 10}" for i in range(k)]
  for i in range(k):
    alpha = 0.25 + 0.6 * w[i] / w.max()
    for n_std in (1.0, 2.0):
      _ellipse(ax, m2[i], c2[i], n_std, fill=False, lw=1.5 if n_std == 1 else 0.8,
               edgecolor=colors[i], alpha=alpha)
  ax.scatter(m2[:, 0], m2[:, 1], marker="x", c="k", s=40, zorder=3, label="means")
  if sc is not None:
    fig.colorbar(sc, ax=ax, label="label")
  plane = "" if d <= 2 else " (first two principal components)"
  ax.set_xlabel("x1" + plane if d <= 2 else "PC 1")
  ax.set_ylabel("x2" if d <= 2 else "PC 2")
  ax.set_title(title or f"GMM, K={k}, {covariance_type} covariances{plane}", fontsize=10)
  ax.legend(loc="best", fontsize=8)
  ax.autoscale_view()
  return fig


def plot_clusters(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray,
                  title: str | None = None, max_points: int = 3000) -> Figure:
  """Points coloured by cluster with the centroids (PCA plane above 2-D)."""
  x2, mean, basis = project_2d(x)
  labels = np.asarray(labels)
  if len(x2) > max_points:
    keep = np.random.default_rng(0).choice(len(x2), max_points, replace=False)
    x2, labels = x2[keep], labels[keep]
  fig = Figure(figsize=(6, 5))
  ax = fig.add_subplot()
  ax.scatter(x2[:, 0], x2[:, 1], s=8, c=labels % 10, cmap="tab10", vmin=-0.5, vmax=9.5,
             alpha=0.7, linewidths=0)
  c2 = (np.asarray(centroids, np.float64) - mean) @ basis.T
  ax.scatter(c2[:, 0], c2[:, 1], marker="X", c="k", s=80, label="centroids")
  d = np.shape(x)[1]
  ax.set_xlabel("x1" if d <= 2 else "PC 1")
  ax.set_ylabel("x2" if d <= 2 else "PC 2")
  ax.set_title(title or f"K-means, K={len(c2)}", fontsize=10)
  ax.legend(loc="best", fontsize=8)
  return fig


def plot_log_likelihood(log_likelihood: Sequence[float], title: str | None = None,
                        test_value: float | None = None) -> Figure:
  """Mean per-point training log-likelihood against EM iteration."""
  ll = np.asarray(log_likelihood, np.float64)
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  ax.plot(np.arange(1, len(ll) + 1), ll, marker="o", ms=3, label="train")
  if test_value is not None:
    ax.axhline(test_value, color="C1", ls="--", label=f"test (final) {test_value:.3f}")
  ax.set_xlabel("EM iteration")
  ax.set_ylabel("mean log-likelihood per point")
  ax.set_title(title or "EM log-likelihood", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def plot_information_criteria(ks: Sequence[int], bic: Sequence[float], aic: Sequence[float],
                              true_k: int | None = None, title: str | None = None) -> Figure:
  """BIC and AIC against the number of components K, with each minimum marked."""
  ks, bic, aic = (np.asarray(v) for v in (ks, bic, aic))
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  for vals, name, color in ((bic, "BIC", "C0"), (aic, "AIC", "C1")):
    ax.plot(ks, vals, marker="o", color=color, label=name)
    best = int(np.argmin(vals))
    ax.scatter([ks[best]], [vals[best]], s=150, facecolors="none", edgecolors=color, lw=2)
  if true_k is not None:
    ax.axvline(true_k, color="0.5", ls=":", label=f"true K = {true_k}")
  ax.set_xlabel("number of components K")
  ax.set_ylabel("criterion (lower is better)")
  ax.set_title(title or f"Model selection: BIC picks K={ks[np.argmin(bic)]}, "
               f"AIC picks K={ks[np.argmin(aic)]}", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def plot_inertia(ks: Sequence[int], inertia: Sequence[float]) -> Figure:
  """K-means inertia against K (the "elbow" plot)."""
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  ax.plot(ks, inertia, marker="o")
  ax.set_xlabel("number of clusters K")
  ax.set_ylabel("inertia (sum of squared distances)")
  ax.set_title("K-means inertia against K", fontsize=10)
  ax.grid(alpha=0.3)
  return fig


def image_grid(images: np.ndarray, image_shape: Sequence[int], num_cols: int,
               pad: int = 1) -> np.ndarray:
  """Tiles (N, H*W) images into one (rows*(H+pad)+pad, cols*(W+pad)+pad) array, grey (0.5) between."""
  h, w = image_shape[:2]
  images = np.asarray(images, np.float64).reshape(-1, h, w)
  n = len(images)
  rows = -(-n // num_cols)
  grid = np.full((rows * (h + pad) + pad, num_cols * (w + pad) + pad), 0.5)
  for i, img in enumerate(images):
    r, c = divmod(i, num_cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
  return grid


def plot_image_grid(images: np.ndarray, image_shape: Sequence[int], num_cols: int = 10,
                    title: str | None = None) -> Figure:
  """A grid of images (e.g. samples from the prior), grey levels in [0, 1]."""
  grid = image_grid(images, image_shape, num_cols)
  fig = Figure(figsize=(0.6 * num_cols + 0.4, 0.6 * grid.shape[0] / (image_shape[0] + 1) + 0.6))
  ax = fig.add_subplot()
  ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.set_axis_off()
  ax.set_title(title or "Samples", fontsize=10)
  return fig


def plot_reconstructions(x: np.ndarray, x_reconstructed: np.ndarray, image_shape: Sequence[int],
                         title: str | None = None) -> Figure:
  """Inputs (top row of each pair) above their reconstructions (bottom row)."""
  x = np.asarray(x)
  xr = np.asarray(x_reconstructed)
  num_cols = min(10, len(x))
  rows = []
  for start in range(0, len(x), num_cols):
    chunk = slice(start, start + num_cols)
    pad = num_cols - len(x[chunk])
    blank = np.full((pad, x.shape[1]), 0.5)
    rows += [np.concatenate([x[chunk], blank]), np.concatenate([xr[chunk], blank])]
  fig = plot_image_grid(np.concatenate(rows), image_shape, num_cols,
                        title or "Inputs (odd rows) and reconstructions (even rows)")
  return fig


def plot_latent_space(z: np.ndarray, labels: np.ndarray | None = None,
                      title: str | None = None, max_points: int = 5000) -> Figure:
  """Latent codes (e.g. posterior means) coloured by label; PCA plane above two dimensions."""
  z = np.asarray(z, np.float64)
  if z.ndim == 1 or z.shape[1] == 1:
    z = np.concatenate([z.reshape(-1, 1), np.zeros((len(z), 1))], axis=1)
  z2, _, _ = project_2d(z)
  if len(z2) > max_points:
    keep = np.random.default_rng(0).choice(len(z2), max_points, replace=False)
    z2, labels = z2[keep], (None if labels is None else np.asarray(labels)[keep])
  fig = Figure(figsize=(6, 5))
  ax = fig.add_subplot()
  sc = _scatter(ax, z2, labels, size=6)
  if sc is not None:
    fig.colorbar(sc, ax=ax, label="label")
  d = z.shape[1]
  ax.set_xlabel("z1" if d <= 2 else "PC 1 of z")
  ax.set_ylabel("z2" if d <= 2 else "PC 2 of z")
  ax.set_title(title or ("Latent space" + ("" if d <= 2 else f" ({d}-D, PCA projection)")),
               fontsize=10)
  return fig


def plot_interpolation(images: np.ndarray, image_shape: Sequence[int],
                       title: str | None = None) -> Figure:
  """One or more interpolation strips: (num_strips, num_steps, H*W) or (num_steps, H*W)."""
  images = np.asarray(images)
  if images.ndim == 2:
    images = images[None]
  num_steps = images.shape[1]
  return plot_image_grid(
      images.reshape(-1, images.shape[-1]), image_shape, num_steps,
      title or "Each row: decoded points on the line between two inputs' posterior means")


def plot_training_curves(records: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None,
                         x_key: str = "step", title: str | None = None) -> Figure:
  """Each metric in ``keys`` (default: all numeric ones) against ``x_key``, one panel per metric.

  Records lacking a metric (e.g. evaluation metrics logged less often) are skipped for it.
  """
  records = list(records)
  if keys is None:
    keys = []
    for r in records:
      for k, v in r.items():
        if k != x_key and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
          keys.append(k)
  keys = list(keys) or ["(none)"]
  cols = min(3, len(keys))
  rows = -(-len(keys) // cols)
  fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
  for i, key in enumerate(keys):
    ax = fig.add_subplot(rows, cols, i + 1)
    pts = [(r[x_key], r[key]) for r in records if r.get(key) is not None and x_key in r]
    if pts:
      xs, ys = zip(*pts)
      ax.plot(xs, ys, marker="." if len(xs) < 50 else None)
    ax.set_xlabel(x_key)
    ax.set_title(key, fontsize=10)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig
