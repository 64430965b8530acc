"""SQL migrations, applied in name order by :func:`worker.database.migrate`."""
