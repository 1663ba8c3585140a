"""Scaling sweeps of train_moe: describe, run, tabulate, compare and plot."""
