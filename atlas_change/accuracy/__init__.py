"""Accuracy and areas by stratified sampling (Olofsson et al. 2014): drawing the sample (sample)
and estimating error-adjusted areas from its reference labels (assess)."""
