"""Waking sleeping apps: APNs, FCM and webhook (UnifiedPush) providers behind one interface.

`provider` defines the interface and its results, `payload` builds the pure request bodies,
`apns`, `fcm` and `webhook` are the HTTP adapters, `dispatcher` retries inside a deadline and
prunes dead tokens.
"""
