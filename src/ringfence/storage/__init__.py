"""Records: SQLAlchemy 2 (async) over SQLite by default or PostgreSQL, migrated by Alembic.

Two databases: the main one holds the services' records; the key store holds only the
subjects' wrapped data keys. They are kept apart so that backups of the main database, which
are kept long, never contain the keys: erasing a subject destroys its key in the key store,
and every copy of its records, in every backup of the main database, becomes unreadable
(promise P19). Back the key store up on a short rotation only.
"""
