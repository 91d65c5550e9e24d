"""Versioned SQL migrations, applied in order by daemon.db.migrate."""
