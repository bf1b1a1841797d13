"""One in-process moto server (S3, EMR, IAM) for the tests that talk to AWS through an endpoint URL."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The AWS SDK v1 in Hadoop's S3A connector refuses SSE-KMS over plain HTTP (as AWS does), so
# the tests that check SSE-KMS on what Spark writes serve moto over TLS. This JVM system property
# of that SDK accepts the tests' self-signed certificate (set in the test JVMs only).
JAVA_TRUST_ANY_CERT = "-Dcom.amazonaws.sdk.disableCertChecking=true"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "moto.crt", folder / "moto.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@contextmanager
def running_moto_server(tls: bool = False) -> Iterator[str]:
    """A moto server on a free local port while the block runs; yields its endpoint URL.

    With tls=True it serves HTTPS with a self-signed certificate; `certificate_of(endpoint)`
    gives its PEM file for boto3's `verify`. moto keeps one state per process, shared by every
    server in it, so a new server starts by resetting it: it begins empty, as a new account would
    (otherwise a queue or bucket an earlier test left behind, with its messages, would be reused).
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    if not tls:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            _reset(f"http://127.0.0.1:{port}")
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()
        return
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    with tempfile.TemporaryDirectory(prefix="moto-tls-") as folder:
        cert, key = self_signed_certificate(Path(folder))
        app = DomainDispatcherApplication(create_backend_app)
        server = make_server("127.0.0.1", port, app, threaded=True, ssl_context=(str(cert), str(key)))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        endpoint = f"https://127.0.0.1:{port}"
        _CERTIFICATES[endpoint] = str(cert)
        try:
            _reset(endpoint)
            yield endpoint
        finally:
            server.shutdown()
            thread.join(timeout=10)
            _CERTIFICATES.pop(endpoint, None)


_CERTIFICATES: dict[str, str] = {}


def certificate_of(endpoint: str) -> str | bool:
    """The PEM file that verifies a TLS moto server (True, i.e. the system CAs, for others)."""
    return _CERTIFICATES.get(endpoint, True)


def _reset(endpoint: str) -> None:
    """Empty moto's state (every service, every server of this process)."""
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=30, verify=certificate_of(endpoint)).raise_for_status()
