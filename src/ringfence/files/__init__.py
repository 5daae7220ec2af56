"""Encrypted attachments: the envelope format, the file service."""
