"""Ephemeral state: what lives only as long as the process (memory by default).

Never written to the database. Each piece sits behind a narrow interface so a shared
implementation (Redis) can take over when several nodes share the load.
"""
