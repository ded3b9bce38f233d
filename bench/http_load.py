"""A lean HTTP/1.1 keep-alive client on asyncio, so the client's own cost stays small beside the server's.

httpx spends about as much CPU per request as a small FastAPI endpoint does; on a 2-core machine
that would measure the client. Requests are encoded once and replayed as bytes.
"""

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


def post_json(url: str, body: Any) -> tuple[str, int, bytes]:
    """(host, port, request bytes) of a POST with a JSON body on a kept-alive connection."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return parts.hostname or "127.0.0.1", parts.port or 80, head + payload


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, request: bytes) -> bytes:
        """One request, its answer's body; anything but 200 raises."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:500]!r}")
        return body

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    samples: int


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _sequential(host: str, port: int, request: bytes, count: int) -> list[float]:
    connection = await Connection.open(host, port)
    try:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            await connection.send(request)
            times.append(time.perf_counter() - start)
        return times
    finally:
        connection.close()


def sequential_latencies(target: tuple[str, int, bytes], count: int) -> list[float]:
    """Seconds per request, one client sending the next request when the answer is in."""
    return asyncio.run(_sequential(*target, count))


def summarise(seconds: list[float]) -> Latency:
    return Latency(percentile(seconds, 0.5) * 1000, percentile(seconds, 0.99) * 1000, len(seconds))


async def _concurrent(host: str, port: int, request: bytes, clients: int, duration: float) -> int:
    connections = [await Connection.open(host, port) for _ in range(clients)]
    done = 0
    stop_at = time.perf_counter() + duration

    async def client(connection: Connection) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await connection.send(request)
            done += 1

    try:
        await asyncio.gather(*(client(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    return done


def throughput(target: tuple[str, int, bytes], clients: int, duration: float) -> float:
    """Requests answered per second with `clients` connections each sending back to back."""
    start = time.perf_counter()
    done = asyncio.run(_concurrent(*target, clients, duration))
    return done / (time.perf_counter() - start)


def median(values: list[float]) -> float:
    return statistics.median(values)
