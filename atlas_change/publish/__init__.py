"""Publishing an output folder for other tools: the GeoPackage (export) and the HTML map (view)."""
