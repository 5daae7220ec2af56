"""HTTP edge: the device API, Acrobits-compatible web services and the admin API (FastAPI)."""
