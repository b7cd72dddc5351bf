"""Background jobs: the manager, the fair queue, worker processes, warm workers, live progress."""
