"""`[http] tls_cert/tls_key` (or `herald run --tls-cert/--tls-key`): HTTPS and WSS with TLS 1.2 or newer only."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import websockets

from engine.core.config import Config
from engine.server.app import Engine
from engine.testing import running_engine
from tests.support import ALICE_TOKEN


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
async def tls_engine(config: Config, certificate: tuple[Path, Path]) -> AsyncIterator[Engine]:
    cert, key = certificate
    http = config.http.model_copy(update={"tls_cert": cert, "tls_key": key})
    async with running_engine(config.model_copy(update={"http": http})) as engine:
        yield engine


def _client_context(cert: Path, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    if max_version is not None:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old protocols, so the server must refuse
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = max_version
    return context


async def test_https_and_wss_work_with_tls_1_2_and_newer(tls_engine: Engine, certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = _client_context(cert)
        context.minimum_version = context.maximum_version = version
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{tls_engine.port}/healthz", ssl=context) as response:
                assert response.status == 200
                assert (await response.json())["status"] == "running"
    async with websockets.connect(f"wss://127.0.0.1:{tls_engine.port}/chat", ssl=_client_context(cert)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": ALICE_TOKEN}))
        assert '"welcome"' in await ws.recv()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_old_tls_versions_are_refused(
    tls_engine: Engine, certificate: tuple[Path, Path], version: ssl.TLSVersion
) -> None:
    cert, _ = certificate
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            async with session.get(f"https://127.0.0.1:{tls_engine.port}/healthz",
                                   ssl=_client_context(cert, max_version=version)):
                pass


async def test_plain_http_is_not_served_on_a_tls_port(tls_engine: Engine) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{tls_engine.port}/healthz") as response:
                await response.read()
