"""Batch work: job files (jobfile), their resumable runs (jobs) and STAC catalogue searches (search)."""
