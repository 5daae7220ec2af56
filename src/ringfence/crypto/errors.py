"""Errors of the envelope encryption.

CryptoError
├── KeyDestroyedError      the subject has no data key: erased, or never created
├── KeyMismatchError       wrapped under another key-encryption key than the one loaded
├── TamperedError          authentication failed: wrong subject, wrong field, altered bytes
└── UnsupportedVersionError  an envelope or wrapped key of a format this code doesn't know
"""


class CryptoError(Exception):
    """Base of every error of `ringfence.crypto`."""


class KeyDestroyedError(CryptoError):
    """The subject's data key does not exist; its ciphertexts can never be read again."""


class KeyMismatchError(CryptoError):
    """The wrapped key names a key-encryption key other than the one configured."""


class TamperedError(CryptoError):
    """The ciphertext failed authentication."""


class UnsupportedVersionError(CryptoError):
    """The first byte names a format version this code cannot read."""
