from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ringfence.transport import CertificateError
from ringfence.transport.tls import (
    CertificateFiles,
    client_context,
    ensure_self_signed,
    server_context,
)

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_self_signed_pair_is_made_once(tmp_path: Path) -> None:
    directory = tmp_path / "tls"

    files = ensure_self_signed(directory, ["sip.example.com", "192.0.2.7"], NOW)

    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["sip.example.com"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.7"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    assert cert.not_valid_before_utc <= NOW
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    assert not list(directory.glob(".*"))  # no temporary files left behind

    before = files.cert_file.read_bytes(), files.key_file.read_bytes()
    again = ensure_self_signed(directory, ["other.example.com"], NOW + timedelta(days=1))
    assert again == files
    assert (again.cert_file.read_bytes(), again.key_file.read_bytes()) == before


def test_contexts_load_the_pair(tmp_path: Path) -> None:
    files = ensure_self_signed(tmp_path, [], NOW)

    assert server_context(files).minimum_version.name == "TLSv1_2"
    assert client_context(files.cert_file).check_hostname


def test_missing_or_mismatched_files_are_certificate_errors(tmp_path: Path) -> None:
    one = ensure_self_signed(tmp_path / "one", [], NOW)
    two = ensure_self_signed(tmp_path / "two", [], NOW)

    with pytest.raises(CertificateError):
        server_context(CertificateFiles(one.cert_file, two.key_file))
    with pytest.raises(CertificateError):
        server_context(CertificateFiles(tmp_path / "none.pem", one.key_file))
    with pytest.raises(CertificateError):
        client_context(tmp_path / "none.pem")


def test_unwritable_directory_is_a_certificate_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(CertificateError):
        ensure_self_signed(blocker / "tls", [], NOW)
