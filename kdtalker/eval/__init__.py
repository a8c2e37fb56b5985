"""Evaluation: the paper's metrics (LSE-C/D, diversity, FID, CPBD, CSIM, FPS, beat-align), HDTF protocol, tables."""
