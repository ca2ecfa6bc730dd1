"""Active/standby controllers on PostgreSQL: the leadership lease, the standby server, the node lifecycle."""
