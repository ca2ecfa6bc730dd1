"""The ``corral`` command line: typer commands grouped by module, rendering in :mod:`.output`."""
