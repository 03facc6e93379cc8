"""The CSR of the wire: how an agent or a user asks for a certificate without sending a key.

``POST /v1/attach`` (agents) and ``POST /v1/requests/{id}/connection`` (owners) carry a PEM
PKCS#10 certificate signing request of at most :data:`MAX_CSR_CHARS` characters, for an EC
(P-256, P-384, P-521) or RSA (2048 to 8192 bits) key. The private key never leaves the process
that made it: :func:`new_private_key` and :func:`csr_for` are what both the agent and the user
client call. The CSR's subject is ignored: the broker decides the certificate's name.
``cryptography`` is imported only when a key is made (this package is imported everywhere).
"""

from __future__ import annotations

from typing import Final

MAX_CSR_CHARS: Final = 8192  # a PEM CSR for an RSA-4096 key is about 1.7 kB
CSR_SUBJECT: Final = "PoD Grid CSR"  # placeholder: the broker names the certificate itself


def new_private_key() -> str:
    """A fresh EC P-256 private key as unencrypted PKCS#8 PEM (keep it in a 0600 file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def csr_for(key_pem: str) -> str:
    """A PEM CSR signed by the PEM private key ``key_pem`` (EC or RSA); ValueError otherwise."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"a {type(key).__name__} cannot sign a CSR here: use an EC or RSA key")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CSR_SUBJECT)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()
