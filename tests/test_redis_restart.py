"""The pinned Celery/kombu keep consuming across a Redis restart with tasks unacknowledged.

celery 5.7.0 was seen to exit (AttributeError on 'hostname') when Redis restarted while a
task was unacknowledged; 5.6.3 reconnects. This runs a private Redis (AOF on, so the queue
survives its restart) and restarts it under a working worker."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time

import pytest
import redis

from tests.workers import start_worker, stop_worker, wait_until
from worker.producer import publish
from worker.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORDS = ("council harbour minister budget river storm election school railway museum "
         "hospital market farmers bridge festival court police energy prices workers").split()


def article(i: int) -> dict:
    """A distinct short English article (own generated text)."""
    rng = random.Random(i)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "."
                 for _ in range(6)]
    return {"id": f"restart-{i}", "text": f"Report number {i} from the city desk. "
            + " ".join(sentences)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, data_dir) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    wait_until(lambda: _pings(client), 10, what="private Redis to start")
    return process


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_worker_keeps_consuming_when_redis_restarts_under_it(tmp_path, settings_for):
    """Redis restarts mid-flood: the worker stays up and every article is stored once."""
    port = free_port()
    server = start_redis(port, tmp_path)
    settings = settings_for(broker_url=f"redis://127.0.0.1:{port}/0", visibility_timeout=10)
    worker = start_worker(settings, tmp_path / "worker.log")
    store = open_store(settings.store_url)
    try:
        publish([article(i) for i in range(40)], settings=settings)
        wait_until(lambda: store.count() >= 3, 120, what="the first articles stored")
        redis.Redis(port=port).shutdown(nosave=True)  # AOF keeps the queue and unacked set
        server.wait(timeout=10)
        time.sleep(2)
        server = start_redis(port, tmp_path)
        publish([article(i) for i in range(40, 45)], settings=settings)
        wait_until(lambda: store.count() == 45, 150,
                   what=f"all 45 articles stored (worker log: {tmp_path / 'worker.log'})")
        assert worker.poll() is None, "the worker exited across the Redis restart"
        assert all(store.get(f"restart-{i}") for i in range(45))
    finally:
        stop_worker(worker)
        server.terminate()
        server.wait(timeout=10)
