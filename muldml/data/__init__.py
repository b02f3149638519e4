"""Datasets: image folders with subject ids, splits, augmentation and the built-in demo faces."""
