"""Sweeps: a search space over recipe keys run as Ray Tune trials, with learning-curve early stopping (LC-PFN)."""
