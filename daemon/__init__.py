"""The telgate process: CLI, wiring, lifecycle, database and embedded PostgreSQL."""

__version__ = "0.1.0"
