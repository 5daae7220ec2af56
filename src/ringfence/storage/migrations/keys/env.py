"""Alembic environment of the keys database (see ringfence.storage.migrate)."""

from ringfence.storage.migrate import run_environment
from ringfence.storage.tables import keys_metadata

run_environment(keys_metadata)
