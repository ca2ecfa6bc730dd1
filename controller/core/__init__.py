"""The pure core: domain model, state machine, DAG analysis and scheduling (stdlib + networkx)."""
