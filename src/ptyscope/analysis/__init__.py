"""Analysis: atomic columns and 3D atoms, resolution (FRC/FSC, information limit) and
vibrations (Green's tensor, dynamical matrix, phonons). (Planned: issues 6, 8, 9.)"""
