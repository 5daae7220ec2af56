"""Local stand-ins for the push services on the internet.

APNs, Google's OAuth2 token endpoint and FCM HTTP v1.

They follow the published contracts (HTTP/2 over TLS, the same paths, headers, JWT checks,
payload limits and error replies) so that tests, and integrators through
`ringfence dev push-sandbox`, exercise the real client code without reaching Apple or Google.
"""
