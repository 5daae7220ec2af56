"""TLS for SIP (RFC 3261 §26.2.1, RFC 5630): certificates and SSL contexts.

A deployment either configures a certificate chain and key, or gets a self-signed pair made
on first start and kept for the next ones. The self-signed certificate is enough for clients
that pin it or skip verification; a public name should get a CA-issued certificate whose
subjectAltName carries the SIP domain (RFC 5922 §7.1).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ringfence.transport.errors import CertificateError

logger = logging.getLogger(__name__)

CERT_FILE_NAME = "sip-cert.pem"
KEY_FILE_NAME = "sip-key.pem"
SELF_SIGNED_VALIDITY = timedelta(days=3650)
#: Starts a little in the past, so a peer whose clock lags still accepts it.
_BACKDATE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """A PEM certificate chain and the PEM private key that goes with it."""

    cert_file: Path
    key_file: Path


def ensure_self_signed(
    directory: Path, hostnames: Sequence[str], now: datetime
) -> CertificateFiles:
    """The self-signed pair in `directory`, made first if it is not there.

    The key is EC P-256, written with mode 0600 (never readable by others, not even for a
    moment); the certificate is valid for ten years from `now`, for `hostnames` and
    127.0.0.1. An existing pair is reused as it is.

    Raises:
        CertificateError: the directory or files cannot be created or written.
    """
    files = CertificateFiles(directory / CERT_FILE_NAME, directory / KEY_FILE_NAME)
    if files.cert_file.exists() and files.key_file.exists():
        return files
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _self_signed(key, hostnames, now)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_atomically(files.key_file, key_pem, mode=0o600)
        _write_atomically(
            files.cert_file, cert.public_bytes(serialization.Encoding.PEM), mode=0o644
        )
    except OSError as exc:
        raise CertificateError(f"cannot write a certificate to {directory}: {exc}") from exc
    logger.info("made a self-signed TLS certificate in %s", directory)
    return files


def _self_signed(
    key: ec.EllipticCurvePrivateKey, hostnames: Sequence[str], now: datetime
) -> x509.Certificate:
    names: list[x509.GeneralName] = []
    for name in (*hostnames, "127.0.0.1"):
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            entry = x509.DNSName(name)
        if entry not in names:
            names.append(entry)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0] if hostnames else "ringfence")]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            # serverAuth for our listeners; clientAuth so the same pair can identify us to a
            # peer server that asks for a certificate (mutual TLS between servers).
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write `data` to `path` through a temporary file created with `mode` from the start."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def server_context(files: CertificateFiles) -> ssl.SSLContext:
    """A server context with `files` loaded; TLS 1.2 at least (RFC 8996 retired 1.0 and 1.1).

    Clients are not asked for certificates: SIP clients authenticate with digest.

    Raises:
        CertificateError: a file is missing or unreadable, or the key does not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert_file, files.key_file)
    except OSError as exc:  # ssl.SSLError included
        raise CertificateError(f"cannot load {files.cert_file} with its key: {exc}") from exc
    return context


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the server against the system's trust anchors.

    `ca_file` adds trust anchors (PEM), such as a peer's self-signed certificate.

    Raises:
        CertificateError: `ca_file` is missing or not PEM certificates.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except OSError as exc:  # ssl.SSLError included
            raise CertificateError(f"cannot load trust anchors from {ca_file}: {exc}") from exc
    return context
