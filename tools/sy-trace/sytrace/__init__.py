"""Reads the merged Chrome trace that train_moe --trace (runtime/trace.h) writes: phase times,
traffic matrices, bandwidth per link class, overlap, stragglers, and SVG plots."""
