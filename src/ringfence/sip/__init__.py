"""The sans-IO SIP core: bytes and the current time in; events, bytes and deadlines out."""
