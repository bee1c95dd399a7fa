"""A per-run certificate authority and SPIFFE workload certificates for the local sidecars.

Istio's sidecars authenticate each other with X.509 certificates whose only identity is a
SPIFFE URI SAN (``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``), issued by
the mesh CA. The local platform reproduces that: one throwaway CA per run, one certificate
per workload, private keys written 0600 and removed with the work dir.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
NAMESPACE = "twopods"
SERVER_SA = "fortioserver"
CLIENT_SA = "fortioclient"
INGRESS_SA = "istio-ingressgateway"

# Short-lived on purpose: a run lasts hours at most, and a leaked key should expire soon.
_VALIDITY = datetime.timedelta(days=2)
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate small clock skew between processes


def spiffe_id(service_account: str, namespace: str = NAMESPACE) -> str:
    """The SPIFFE identity Istio gives a workload running as ``service_account``."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


@dataclasses.dataclass(frozen=True)
class CertFiles:
    """PEM files of one identity: its certificate (chain) and its private key."""

    cert: Path
    key: Path
    spiffe: str


@dataclasses.dataclass
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start (not chmod after the fact) so the key is never readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, *certs: x509.Certificate) -> None:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


class CertAuthority:
    """A self-signed CA that issues SPIFFE workload certificates into ``directory``."""

    def __init__(self, directory: Path, name: str = "meshperf-local-ca") -> None:
        self.directory = Path(directory)
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        self._issuer = _Issuer(cert, key)
        self.name = name
        self.cert_path = self.directory / f"{name}.crt"
        _write_cert(self.cert_path, cert)

    def issue(self, service_account: str, spiffe: str | None = None) -> CertFiles:
        """A workload certificate for ``service_account`` (SAN = its SPIFFE id), like Istio's."""
        spiffe = spiffe or spiffe_id(service_account)
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        issuer = self._issuer
        cert = (
            x509.CertificateBuilder()
            # Istio workload certificates have an empty subject; the URI SAN is the identity.
            .subject_name(x509.Name([]))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=True
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False,
            )
            .sign(issuer.key, hashes.SHA256())
        )
        stem = f"{self.name}-{service_account}"
        files = CertFiles(self.directory / f"{stem}.crt", self.directory / f"{stem}.key", spiffe)
        _write_key(files.key, key)
        _write_cert(files.cert, cert)
        return files
