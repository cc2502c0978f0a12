"""Change: periods composited from maps (composite), the joint change decision over every date
(joint) and the compare run that writes change rasters and from-to hectares (compare)."""
