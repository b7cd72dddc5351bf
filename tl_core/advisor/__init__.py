"""Mode advice and cut-depth probes."""
