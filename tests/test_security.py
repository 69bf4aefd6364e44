"""TLS to Redis is verified or refused; passwords never reach output, logs or dead letters.

The configuration outcome is unit-tested (no TLS server needed); a private TLS redis-server
(certificates made with openssl) then shows that verification really happens, and a private
redis-server with --requirepass carries a password through a real worker.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection

from worker.app import celery_config, create_app, redis_tls_options
from worker.errors import ConfigurationError
from worker.faults.harness import enrich, start_worker, stop_worker, wait_until
from worker.producer import check_broker, publish

SECRET = "S3cret-" + uuid.uuid4().hex[:8]


# --- configuration: rediss:// must verify -------------------------------------------------
def test_bare_rediss_defaults_to_verified_tls_on_the_hardened_transport(settings_for):
    settings = settings_for(broker_url=f"rediss://:{SECRET}@redis.example:6380/0")
    config = celery_config(settings)
    assert config["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert config["redis_backend_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert config["broker_transport"] == "worker.transport:Transport"
    assert config["broker_transport_options"]["tls_required"] is True
    connection = create_app(settings).connection_for_write()
    assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}  # not kombu's CERT_NONE
    assert connection.hostname == "redis.example" and connection.port == 6380


def test_stock_kombu_would_not_verify_a_bare_rediss_url():
    """Why this module exists: what kombu does with the same URL on its own (FACTS.md)."""
    app = Celery("plain")
    app.conf.broker_url = "rediss://redis.example:6380/0"
    assert app.connection_for_write().ssl == {"ssl_cert_reqs": ssl.CERT_NONE}


def test_url_tls_options_are_kept_and_passed_as_one_dict(settings_for):
    url = ("rediss://redis.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
           "&ssl_certfile=/etc/c.pem&ssl_keyfile=/etc/c.key")
    config = celery_config(settings_for(broker_url=url))
    assert config["broker_use_ssl"] == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem",
        "ssl_certfile": "/etc/c.pem", "ssl_keyfile": "/etc/c.key"}
    assert "ssl_" not in config["broker_url"]  # else kombu would replace the dict with them
    app = create_app(settings_for(broker_url=url))
    assert app.connection_for_write().ssl == config["broker_use_ssl"]


@pytest.mark.parametrize("query", [
    "ssl_cert_reqs=none", "ssl_cert_reqs=optional", "ssl_check_hostname=false",
    "ssl_cert_reqs=required&ssl_check_hostname=0",
])
def test_unverified_tls_refuses_to_start(settings_for, query):
    settings = settings_for(broker_url=f"rediss://:{SECRET}@redis.example:6380/0?{query}")
    with pytest.raises(ConfigurationError) as caught:
        create_app(settings)
    message = caught.value.message
    assert "without verifying the server's certificate" in message
    assert "ENRICH_TLS_INSECURE_SKIP_VERIFY" in message
    assert SECRET not in message and ":***@redis.example" in message


def test_uppercase_constant_is_refused_with_the_spelling_both_clients_read(settings_for):
    """kombu reads CERT_REQUIRED, redis-py (dead letters, dedupe index) does not."""
    with pytest.raises(ConfigurationError, match="ssl_cert_reqs=required"):
        celery_config(settings_for(broker_url="rediss://h:6380/0?ssl_cert_reqs=CERT_REQUIRED"))


def test_index_redis_url_is_checked_too(settings_for):
    settings = settings_for(redis_url="rediss://index.example:6380/0?ssl_cert_reqs=none")
    with pytest.raises(ConfigurationError, match="ENRICH_REDIS_URL"):
        create_app(settings)


def test_explicit_opt_out_allows_unverified_tls(settings_for):
    settings = settings_for(broker_url="rediss://redis.example:6380/0?ssl_cert_reqs=none",
                            tls_insecure_skip_verify=True)
    assert celery_config(settings)["broker_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_NONE


def test_plain_redis_url_gets_no_tls_options(settings_for):
    config = celery_config(settings_for(broker_url="redis://127.0.0.1:6379/15"))
    assert "broker_use_ssl" not in config
    assert config["broker_transport"] == "worker.transport:Transport"
    assert redis_tls_options("redis://h/0", what="x") is None


def test_hardened_transport_refuses_plain_text_when_tls_is_required():
    connection = Connection("redis://127.0.0.1:1/0", transport="worker.transport:Transport",
                            transport_options={"tls_required": True})
    with pytest.raises(ConfigurationError, match="plain text"):
        connection.default_channel  # noqa: B018 - opening the channel is the test


def test_worker_refuses_to_start_on_unverified_tls(settings_for, tmp_path):
    settings = settings_for(broker_url=f"rediss://:{SECRET}@127.0.0.1:1/0?ssl_cert_reqs=none")
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        worker.wait(timeout=60)
    finally:
        stop_worker(worker)
    assert worker.returncode != 0
    output = log.read_text()
    assert "ConfigurationError" in output and "without verifying" in output
    assert SECRET not in output


# --- a real TLS Redis ---------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_redis(tmp_path):
    """A private redis-server speaking only TLS, with a certificate from a throwaway CA."""
    if not (shutil.which("redis-server") and shutil.which("openssl")):
        pytest.skip("redis-server and openssl are needed for a TLS Redis")
    from tests.test_redis_restart import free_port

    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "1", "-subj", "/CN=enrich-test-ca", cwd=tmp_path)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=127.0.0.1", cwd=tmp_path)
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "ext.cnf",
             cwd=tmp_path)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no"], cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    client = redis.Redis.from_url(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path}/ca.pem")

    def pings():
        try:
            return client.ping()
        except redis.RedisError:
            return server.poll() is not None  # exited: no TLS support in this build
    wait_until(pings, 10, what="the TLS Redis")
    if server.poll() is not None:
        pytest.skip("this redis-server was built without TLS")
    yield port, tmp_path / "ca.pem", client
    server.terminate()
    server.wait(timeout=10)


@pytest.mark.slow
def test_tls_broker_is_verified_for_real(tls_redis, settings_for):
    """With the CA the hardened transport publishes and consumes over TLS; without it the
    self-signed chain is refused (verification is on); the opt-out connects loudly."""
    port, ca, client = tls_redis
    trusted = settings_for(broker_url=f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")
    report = publish([{"id": "tls-1", "text": "Sent over TLS."}], settings=trusted)
    assert report.published == ["tls-1"]
    assert client.llen(trusted.queue) == 1
    app = create_app(trusted)
    with app.connection_for_read() as connection:
        assert type(connection.transport).__module__ == "worker.transport"
        message = connection.SimpleQueue(trusted.queue).get(timeout=10)
        assert message.headers["task"] == "enrich.article"
        message.ack()

    untrusted = settings_for(broker_url=f"rediss://127.0.0.1:{port}/0")
    with pytest.raises(ConnectionError, match="certificate verify failed"):
        check_broker(create_app(untrusted), untrusted)

    insecure = settings_for(broker_url=f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none",
                            tls_insecure_skip_verify=True)
    check_broker(create_app(insecure), insecure)


# --- secrets ------------------------------------------------------------------------------
@pytest.fixture
def password_redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    from tests.test_redis_restart import free_port

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", SECRET,
         "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=SECRET)

    def pings():
        try:
            return client.ping()
        except redis.RedisError:
            return False
    wait_until(pings, 10, what="the password Redis")
    yield port, client
    server.terminate()
    server.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.integration
def test_passwords_never_appear_in_status_logs_or_dead_letters(
    password_redis, settings_for, pg_schema_url, tmp_path
):
    port, client = password_redis
    broker_url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    # Trust auth on this PostgreSQL: the password is carried, never needed.
    good_store = pg_schema_url.replace("postgres@", f"postgres:{SECRET}@")
    dead_store = f"postgresql://postgres:{SECRET}@127.0.0.1:1/test"
    settings = settings_for(broker_url=broker_url, store_url=dead_store, max_retries=0)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        publish([{"id": "secret-1", "text": "The store for this one is down."}],
                settings=settings)
        create_app(settings).send_task("enrich.article", args=[{"id": "bad", "body": 1}],
                                       queue=settings.queue)
        client.lpush(settings.queue, b"garbage for the queue")
        wait_until(lambda: client.llen(settings.dead_letter_key) == 3, 90,
                   what=f"three dead letters (log {log})")
        dead = [raw.decode() for raw in client.lrange(settings.dead_letter_key, 0, -1)]
        assert {'"store_unavailable"' in d or '"invalid_article"' in d
                or '"malformed_message"' in d for d in dead} == {True}
        assert not [d for d in dead if SECRET in d]

        outputs = []
        for store_url in (good_store, dead_store):
            status = enrich("status", settings=settings.model_copy(
                update={"store_url": store_url}))
            outputs.append(status)
            assert SECRET not in (status.stdout + status.stderr).decode()
        assert outputs[0].returncode == 0 and b"dead letters 3" in outputs[0].stdout
        assert b":***@" in outputs[0].stdout
        assert outputs[1].returncode == 2  # store down: an error, redacted
        wrong = enrich("status", settings=settings.model_copy(update={
            "broker_url": f"redis://:{SECRET}x@127.0.0.1:{port}/0", "store_url": good_store}))
        assert wrong.returncode == 2 and SECRET not in (wrong.stdout + wrong.stderr).decode()
        listed = enrich("dlq", "list", settings=settings)
        assert listed.returncode == 0 and SECRET not in listed.stdout.decode()
        assert worker.poll() is None
    finally:
        stop_worker(worker)
    text = log.read_text()
    assert "dead-lettered" in text and "secret-1" in text  # the log is the real one
    assert SECRET not in text
