"""ptyscope: 3D and 4D electron ptychography from 4D-STEM data.

Subpackages follow the pipeline: :mod:`ptyscope.physics` (pure physics kernels) feeds
simulation, data handling and reconstruction; tomography and analysis build on those.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ptyscope")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
