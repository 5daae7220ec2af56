"""Who is calling: device logins with access and refresh tokens, and admin tokens."""
