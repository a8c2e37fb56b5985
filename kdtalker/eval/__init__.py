"""Evaluation: the paper's metrics (LSE-C/D, head-motion diversity, FID, CPBD, CSIM, FPS, beat-align), the HDTF protocol and its tables."""
