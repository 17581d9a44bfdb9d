"""Gaussian splats: the model, its densification, 3DGS .ply files and similarity transforms."""
