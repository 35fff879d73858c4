"""A bare HTTP/1.1 client for hostile requests that real clients refuse to build (raw non-ASCII header bytes)."""

from __future__ import annotations

import asyncio
import json


async def raw_request(port: int, method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> \
        tuple[int, dict[str, object]]:
    """Send exactly these bytes to 127.0.0.1:`port`; return the status and the JSON body (or {"raw": text})."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"{method} {path} HTTP/1.1".encode(), f"Host: 127.0.0.1:{port}".encode(), b"Connection: close",
                f"Content-Length: {len(body)}".encode()]
        head += [name.encode() + b": " + value for name, value in headers.items()]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    status = int(status_line.split()[1])
    payload = rest.partition(b"\r\n\r\n")[2]
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, {"raw": payload.decode(errors="replace")}
