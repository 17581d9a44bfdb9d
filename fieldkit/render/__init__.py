"""Pure-PyTorch volume rendering in the style of nerfacc.

Small flat modules, functions first; the field is always passed in as a callable:

- ``occupancy``: ``OccupancyGrid`` (EMA density bitfield for empty-space skipping).
- ``volume``: ``ray_aabb``, ``march`` -> ``RaySamples`` (packed), ``midpoints``.
- ``composite``: ``render_weights``, ``accumulate``, ``render_rays`` and the dense reference
  ``render_dense``.
- ``crop``: ``CropBox`` and ``crop_model`` (the viewer's crop box and ``--crop``).
"""
from fieldkit.render.composite import accumulate, render_dense, render_rays, render_weights
from fieldkit.render.occupancy import OccupancyGrid
from fieldkit.render.volume import RaySamples, march, midpoints, packed_info_from, ray_aabb

__all__ = [
    "OccupancyGrid",
    "RaySamples",
    "accumulate",
    "march",
    "midpoints",
    "packed_info_from",
    "ray_aabb",
    "render_dense",
    "render_rays",
    "render_weights",
]
