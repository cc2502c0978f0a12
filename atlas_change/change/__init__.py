"""Change: periods composited from maps (composite), the joint change decision over every date
(joint), its transition prior fitted to a model (prior) and the compare run that writes change
rasters and from-to hectares (compare)."""
