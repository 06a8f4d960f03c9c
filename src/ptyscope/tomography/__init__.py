"""Tomography: differentiable projector, tilt alignment, volume reconstruction and the
per-tilt runner. (Planned: issue 9.)"""
