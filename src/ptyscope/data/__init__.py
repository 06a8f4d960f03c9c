"""Data: Dataset4D (array + calibration), detector-format readers and writers, and
preprocessing (crop, bin, pad, normalise, centre, scan rotation, PACBED). (Planned: issue 4.)"""
