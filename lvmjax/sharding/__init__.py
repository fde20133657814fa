"""Device meshes and row-sharded data: how the fits scale over devices and hosts.

lvmjax scales on JAX's own runtime: a ``jax.sharding.Mesh`` whose data axis splits the rows of
``x``, and ``jax.distributed`` for several processes. The EM and Lloyd iterations are sums of
per-row statistics, so a sharded fit runs each device's rows locally and adds the statistics
with one ``psum`` per iteration; parameters stay replicated. This module has the pieces to put
data on a mesh::

  mesh = sharding.data_mesh()                        # all devices, axis "data"
  x_s, w_s = sharding.shard_rows(x, mesh)            # pad to a multiple, weight 0 on padding
  result = gmm.fit(key, x_s, 10, sample_weight=w_s)  # detects the sharding of x_s
  result = gmm.fit(key, x, 10, mesh=mesh)            # or: gmm.fit shards x itself

On several hosts (after ``jax.distributed.initialize``) each process loads only its own rows
(``process_rows``; ``data.load_dataset(..., rows=...)`` reads just those from the file) and
``rows_from_processes`` joins them into one global array. Numbers over all rows that are not
computed on the global array come from per-process parts: ``process_sum`` adds sums (e.g. of
log-likelihoods) and ``process_concat`` gathers small per-row values (e.g. labels).

On a multi-core CPU, JAX's one CPU device threads only large matrix products; the rest of an EM or
Lloyd iteration runs on one core. ``import lvmjax`` therefore gives JAX one host device per core
(:func:`use_cores_by_default`; a count the user fixed wins, and ``LVMJAX_CPU_DEVICES=1`` keeps one
device), and the fits split large data over them without a ``mesh`` (:func:`auto_placement`):
each core runs its rows on its own thread and the result comes back on the first device. Small
data, data committed to a device and traced data stay on one device. :func:`use_cpu_cores`
(before the first JAX computation) sets the count explicitly::

  sharding.use_cpu_cores(4)                          # before the first JAX computation
  result = gmm.fit(key, x, 10)                       # large x: split over the 4 devices
  result = gmm.fit(key, x, 10, mesh=sharding.data_mesh())  # any x: split

The package's modules: :mod:`~lvmjax.sharding.mesh` (meshes, the data axis),
:mod:`~lvmjax.sharding.layout` (``RowLayout``, ``Shard``, putting rows on a mesh),
:mod:`~lvmjax.sharding.collectives` (inside ``shard_map``; the reduction hook ``psum(v, shard)``
that is the identity for ``shard=None``, so one function serves one device and a mesh) and
:mod:`~lvmjax.sharding.processes` (multi-host helpers). Every name is importable from
``lvmjax.sharding``.

Padding rows carry ``sample_weight`` 0, so they change no statistic; the fits that take a
``mesh`` pad internally and also exclude the padding from the unweighted quantities (K-means'
centring and tolerance), so a sharded fit equals the fit on one device up to float rounding.
"""
from lvmjax.sharding.collectives import device_index
from lvmjax.sharding.collectives import gather
from lvmjax.sharding.collectives import gather_rows
from lvmjax.sharding.collectives import local_rows
from lvmjax.sharding.collectives import mean_and_variance
from lvmjax.sharding.collectives import pmax
from lvmjax.sharding.collectives import pmin
from lvmjax.sharding.collectives import psum
from lvmjax.sharding.collectives import take
from lvmjax.sharding.collectives import take_rows
from lvmjax.sharding.layout import layout_for
from lvmjax.sharding.layout import pad_rows
from lvmjax.sharding.layout import place_rows
from lvmjax.sharding.layout import RowLayout
from lvmjax.sharding.layout import Shard
from lvmjax.sharding.layout import shard_rows
from lvmjax.sharding.mesh import auto_placement
from lvmjax.sharding.mesh import AutoMesh
from lvmjax.sharding.mesh import AUTO_MESH_MIN_ROWS
from lvmjax.sharding.mesh import AUTO_MESH_MIN_WORK
from lvmjax.sharding.mesh import CPU_DEVICES_ENV
from lvmjax.sharding.mesh import cores_by_default
from lvmjax.sharding.mesh import cpu_device_count_fixed
from lvmjax.sharding.mesh import DATA_AXIS
from lvmjax.sharding.mesh import data_mesh
from lvmjax.sharding.mesh import is_global
from lvmjax.sharding.mesh import Mesh
from lvmjax.sharding.mesh import mesh_of
from lvmjax.sharding.mesh import num_shards
from lvmjax.sharding.mesh import replicated
from lvmjax.sharding.mesh import row_sharding
from lvmjax.sharding.mesh import spread_devices
from lvmjax.sharding.mesh import to_first_device
from lvmjax.sharding.mesh import use_cores_by_default
from lvmjax.sharding.mesh import use_cpu_cores
from lvmjax.sharding.processes import check_data
from lvmjax.sharding.processes import check_local_values
from lvmjax.sharding.processes import check_sample_weight
from lvmjax.sharding.processes import process_concat
from lvmjax.sharding.processes import process_rows
from lvmjax.sharding.processes import process_share
from lvmjax.sharding.processes import process_sum
from lvmjax.sharding.processes import rows_from_processes
from lvmjax.sharding.processes import ShapeOnly

__all__ = [
    "AUTO_MESH_MIN_ROWS", "AUTO_MESH_MIN_WORK", "auto_placement", "AutoMesh", "check_data",
    "check_local_values", "check_sample_weight", "cores_by_default", "cpu_device_count_fixed",
    "CPU_DEVICES_ENV", "DATA_AXIS", "data_mesh", "device_index", "gather", "gather_rows",
    "is_global", "layout_for", "local_rows", "mean_and_variance", "Mesh", "mesh_of", "num_shards",
    "pad_rows", "place_rows", "pmax", "pmin", "process_concat", "process_rows", "process_share",
    "process_sum", "psum", "replicated", "row_sharding", "RowLayout", "rows_from_processes",
    "ShapeOnly", "Shard", "shard_rows", "spread_devices", "take", "take_rows", "to_first_device",
    "use_cores_by_default", "use_cpu_cores",
]
