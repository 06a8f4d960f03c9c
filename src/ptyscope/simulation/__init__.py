"""Simulation: specimen (ase.Atoms) → potential slices → 4D-STEM and tilt series, with
frozen phonons, partial coherence and dose; optional abTEM adapter. (Planned: issue 3.)"""
