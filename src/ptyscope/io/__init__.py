"""File input/output: inspection of data and result files (``ptyscope info``) and, later,
the self-describing HDF5 result format."""
