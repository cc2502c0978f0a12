"""Mapping: one scene to a land-cover map - the run (pipeline), its Dask workers (cluster), the sky
(cloud) and surface (water, snow) tests. Below it: `read` (pixels), `model` (the predictor), `tile`
(the patch grid) and `outputs` (the files)."""
