"""A private redis-server for the run, and what its counters say.

The end-to-end phase and the naive peer talk to a redis-server started for this run on a
free port (no persistence, no other clients), so ``INFO commandstats`` and the network
byte counters measure our traffic only.
"""

from __future__ import annotations

import collections
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis


class RedisServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """``redis-server`` on 127.0.0.1:<free port>, no persistence; stopped by ``stop()``."""

    def __init__(self, binary: str = "redis-server") -> None:
        path = shutil.which(binary)
        if path is None:
            raise RedisServerError(
                f"{binary!r} not found: the benchmark starts a private redis-server so that "
                "other clients' traffic does not count (install Redis or pass --redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="enrich-bench-redis-"))
        self.port = free_port()
        self.process = subprocess.Popen(
            [path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RedisServerError(f"redis-server did not start (see {self.dir}/log)")
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def snapshot(self) -> dict[str, Any]:
        commands = {name.removeprefix("cmdstat_"): int(stats["calls"])
                    for name, stats in self.client.info("commandstats").items()}
        info = self.client.info("stats")
        return {"commands": commands, "net_in": int(info["total_net_input_bytes"]),
                "net_out": int(info["total_net_output_bytes"]), "at": time.monotonic()}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.client.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Commands (total and by name) and bytes between two snapshots. The two INFO calls of
    the snapshot that ends the window are in it; they are two commands per window, not per
    article."""
    names = set(before["commands"]) | set(after["commands"])
    by = {n: after["commands"].get(n, 0) - before["commands"].get(n, 0) for n in names}
    by = {n: c for n, c in sorted(by.items(), key=lambda kv: -kv[1]) if c}
    return {
        "seconds": after["at"] - before["at"],
        "commands": sum(by.values()),
        "by_command": by,
        "bytes_in": after["net_in"] - before["net_in"],
        "bytes_out": after["net_out"] - before["net_out"],
    }


class Monitor:
    """Every command the server runs while open (``MONITOR``), counted by origin and name:
    "client" for what clients sent (round trips, pipelines and MULTI counted per command),
    "script" for what Lua scripts ran inside the server. MONITOR slows the server, so it is
    used on a short accounting phase of its own, never on a timed one."""

    _STOP = "enrich-bench-monitor-stop"

    def __init__(self, server: PrivateRedis) -> None:
        self.server = server
        self.counts: collections.Counter = collections.Counter()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.server.port)
        with client.monitor() as monitor:
            self._ready.set()
            while True:
                line = monitor.connection.read_response()
                if isinstance(line, bytes):
                    line = line.decode("utf-8", "replace")
                start = line.find("[")
                end = line.find("] ", start)
                origin = "script" if line[start + 1:end].split(" ", 1)[-1] == "lua" else "client"
                name = line[end + 3:line.find('"', end + 3)].lower()
                if name == "echo" and self._STOP in line[end:end + 100]:
                    break
                self.counts[(origin, name)] += 1
        client.close()

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.server.client.echo(self._STOP)
        self._thread.join(30)

    def per_article(self, articles: int) -> dict[str, Any]:
        def total(origin: str) -> int:
            return sum(c for (o, _), c in self.counts.items() if o == origin)

        by = {}
        for (origin, name), count in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            by.setdefault(origin, {})[name] = round(count / articles, 2)
        return {
            "articles": articles,
            "client_commands_per_article": round(total("client") / articles, 2),
            "script_commands_per_article": round(total("script") / articles, 2),
            "by_command_per_article": by,
        }
