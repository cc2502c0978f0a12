"""The atlas of a region: every tile of a region and period classified on its own UTM grid, the
cells' class probabilities warped onto one equal-area grid (grid), merged where tiles overlap
(merge), change through the periods with the joint decision (`change.compare`), and hectares per
administrative unit (stats); the run itself (run), resumable, tile by tile on one Dask cluster."""
