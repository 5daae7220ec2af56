"""Overlay mode: keeping sleeping devices registered on an existing PBX (SIPIS-style)."""
