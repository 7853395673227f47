"""The per-worker training loop and its edges: checkpoints, collectives, validation, Ray glue."""
