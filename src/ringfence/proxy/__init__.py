"""The stateful proxy of RFC 3261 §16: forwarding mechanics (sans-IO) and routing decisions."""
