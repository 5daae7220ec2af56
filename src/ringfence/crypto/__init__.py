"""Per-subject envelope encryption: every personal datum is sealed with its subject's own key.

A subject (an account) has a random 256-bit data key. The data key is stored only wrapped by
the service's key-encryption key (KEK); destroying the wrapped key makes every ciphertext of
that subject unreadable, in the live database and in every backup (erasure by key
destruction, promises P16 and P19).
"""

from ringfence.crypto.blind import BlindIndex
from ringfence.crypto.envelope import SubjectCipher
from ringfence.crypto.errors import (
    CryptoError,
    KeyDestroyedError,
    KeyMismatchError,
    TamperedError,
    UnsupportedVersionError,
)
from ringfence.crypto.keyring import KeyEncryptionKey, Keyring, WrappedKeyStore

__all__ = [
    "BlindIndex",
    "CryptoError",
    "KeyDestroyedError",
    "KeyEncryptionKey",
    "KeyMismatchError",
    "Keyring",
    "SubjectCipher",
    "TamperedError",
    "UnsupportedVersionError",
    "WrappedKeyStore",
]
