"""`serve --tls-cert/--tls-key`: HTTPS and WSS from the hub itself, with a certificate made here."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from tests.integration.hubproc import HubProcess, free_port

ARGS = ("--servers", "2", "--seed", "3", "--tick", "0.5", "--no-local")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and localhost), valid for a day: `(cert.pem, key.pem)`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openmanager test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


async def printed(hub: HubProcess, text: str, timeout: float = 10.0) -> None:
    """Wait for the hub to print `text` (it prints once uvicorn reports started, just after /readyz answers)."""
    async with asyncio.timeout(timeout):
        while text not in hub.log():
            await asyncio.sleep(0.05)


async def test_https_and_wss_with_a_secure_session_cookie(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    hub = HubProcess(tmp_path / "data", *ARGS, "--tls-cert", str(cert), "--tls-key", str(key))
    hub.scheme, hub.verify = "https", trust
    hub.start()  # waits for https://.../readyz, trusting only that certificate
    try:
        await printed(hub, f"Dashboard: https://127.0.0.1:{hub.port}/ ")  # no token: stdout is a file
        async with httpx.AsyncClient(base_url=hub.base, verify=trust, timeout=10) as browser:
            r = await browser.get("/", params={"token": hub.token})
            assert r.status_code == 303
            attributes = {a.strip().lower() for a in r.headers["set-cookie"].split(";")[1:]}
            assert {"secure", "httponly", "samesite=strict"} <= attributes
            me = await browser.get("/api/v1/me")
            assert me.json() == {"user": "admin", "role": "admin", "via": "session"}
            cookie = browser.cookies[f"om_session_{hub.port}"]
        async with connect(hub.ws_url, ssl=trust, additional_headers={"Cookie": f"om_session_{hub.port}={cookie}"},
                           subprotocols=["openmanager.v1.json"], open_timeout=10) as ws:  # type: ignore[list-item]
            assert hub.ws_url.startswith("wss://")
            async with asyncio.timeout(5):
                welcome = orjson.loads(await ws.recv())
            assert welcome["type"] == "welcome"
        # a client that does not trust the certificate gets no connection at all
        async with httpx.AsyncClient(base_url=hub.base, timeout=10) as stranger:
            try:
                await stranger.get("/healthz")
                raise AssertionError("an untrusted certificate was accepted")
            except httpx.ConnectError:
                pass
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=10) as plain:
            try:
                r = await plain.get("/healthz")
                assert r.status_code >= 400  # plain HTTP on the TLS port is not served
            except httpx.HTTPError:
                pass
    finally:
        hub.stop()


def test_tls_needs_both_files_and_readable_pem(tmp_path: Path) -> None:
    cert, _key = self_signed(tmp_path)

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "openmanager", "serve", "--port", str(free_port()),
                               "--data-dir", str(tmp_path / "data"), "--no-simulator", "--no-local", *args],
                              capture_output=True, text=True, timeout=60)

    only_cert = serve("--tls-cert", str(cert))
    assert only_cert.returncode == 2 and "tls_cert and tls_key go together" in only_cert.stderr
    missing = serve("--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    (tmp_path / "garbage.pem").write_text("not a key\n")
    garbage = serve("--tls-cert", str(cert), "--tls-key", str(tmp_path / "garbage.pem"))
    assert garbage.returncode == 2 and "cannot use tls_cert" in garbage.stderr
