"""ringfence: the self-hosted, privacy-first cloud side of a SIP softphone service."""

__version__ = "0.1.0"
