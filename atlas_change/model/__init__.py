"""Models: the networks (nets), their cards and weights (registry), training (augment, train),
calibration (calibrate), int8 conversion (quantize) and the predictor every stage runs them with
(infer). Depends only on the shared basics and `tile`; nothing here reads scenes."""
