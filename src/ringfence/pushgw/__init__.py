"""Push instances: what a device leaves with the push server so that it can be woken.

An instance is one app installation's account on one device (Acrobits' "selector"): its
push tokens and app id, reported over HTTPS. It lives for the account's push instance max
age (3 to 6 days, P3) from its last report, is sealed with a key of its own, and is erased,
key first, on expiry, on DELETE, when push is switched off and with the account. In overlay
mode (issue #5) the instance also carries the SIP account the server registers upstream.
"""
