"""Fan-in DAGs (N leaves -> one root) for the apply benchmark, one module per engine."""
