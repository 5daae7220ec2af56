"""The registrar: REGISTER processing (RFC 3261 §10.3, RFC 3327, RFC 5626 §6).

`rules` is sans-IO: a REGISTER, the AOR's current bindings and `now` in, the response and the
new bindings out. `service` authenticates (digest, RFC 3261 §22) and applies the rules over a
`state.location.LocationService`.
"""
