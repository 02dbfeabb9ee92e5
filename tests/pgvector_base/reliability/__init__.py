"""Production safety: many replicas, timeouts, interrupted runs, bad input, secrets, linting."""
