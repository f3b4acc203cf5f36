"""A run folder: its lock and status, checkpoints, provenance, the report and the model card."""
