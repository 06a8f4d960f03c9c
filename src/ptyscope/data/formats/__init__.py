"""Detector and file formats behind :func:`ptyscope.data.readers.read_4dstem`.

One module per format family: NumPy files, HDF5 (ptyscope's own and any other), EMPAD raw,
Quantum Detectors Merlin MIB, and the optional RosettaSciIO bridge. Each reader takes a
path and keyword options and returns a :class:`~ptyscope.data.dataset.Dataset4D` whose
data stays on disk where the format allows it. Shared option handling (the calibration a
file lacks, the scan shape) lives in :mod:`ptyscope.data.formats._common`.
"""
