"""Alembic environment of the main database (see ringfence.storage.migrate)."""

from ringfence.storage.migrate import run_environment
from ringfence.storage.tables import metadata

run_environment(metadata)
