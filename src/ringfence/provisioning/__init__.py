"""Tenants, accounts and their configuration: the switches that turn each feature on or off.

Promise P1: a feature processes personal data only when the account's configuration enables
it. `FeatureConfig` is that configuration; the API gates every feature endpoint on it.
"""
