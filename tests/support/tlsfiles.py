"""Self-signed certificates made by the test itself (never checked in)."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_cert(directory: Path, name: str = "localhost", serial: int | None = None) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(
            __import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, crt_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, crt_path


def make_chain(directory: Path) -> dict[str, Path]:
    """root CA -> intermediate CA -> leaf 'localhost'; only the root is for the client to trust."""
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def build(subject, issuer, key, signer, ca: bool, san: bool = False):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   # Python 3.13's default client context (VERIFY_X509_STRICT) refuses a chain without them
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                                  critical=False))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                                            critical=False)
        return builder.sign(signer, hashes.SHA256())

    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = build(name("Test Root"), name("Test Root"), root_key, root_key, ca=True)
    mid = build(name("Test Intermediate"), root.subject, mid_key, root_key, ca=True)
    leaf = build(name("localhost"), mid.subject, leaf_key, mid_key, ca=False, san=True)
    paths = {"root": directory / "root.crt", "chain": directory / "chain.pem",
             "crt": directory / "leaf.crt", "key": directory / "leaf.key"}
    pem = serialization.Encoding.PEM
    paths["root"].write_bytes(root.public_bytes(pem))
    paths["chain"].write_bytes(mid.public_bytes(pem))
    paths["crt"].write_bytes(leaf.public_bytes(pem))
    paths["key"].write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return paths


def encrypt_key(key_path: Path, passphrase: bytes) -> Path:
    """A copy of a PEM private key encrypted with ``passphrase`` (beside it, '.enc.key')."""
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    encrypted = key_path.with_suffix(".enc.key")
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(passphrase)))
    return encrypted
