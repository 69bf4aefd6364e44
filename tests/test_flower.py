"""`enrich flower`: authentication by default, refusal without it, article text kept out.

The unit tests build the command without starting anything. The slow test runs a real
`enrich worker` and `enrich flower` against the test Redis and reads Flower's HTTP API.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path

import pytest

from tests.conftest import settings_env
from worker.app import BATCH_TASK, CHAIN
from worker.flower import (
    CONF_FILE,
    EXIT_INSECURE,
    FlowerConfigError,
    flower_command,
    parse_basic_auth,
    scrub_task_event,
)
from worker.settings import Settings

ENRICH = [sys.executable, "-m", "worker.cli"]

# Own texts, short and plain. MARKER is looked for in everything Flower answers.
MARKER = "Tollington"
ARTICLES = [
    {
        "id": "flower-test-library",
        "url": "https://example.org/news/flower-test-library",
        "source": "example.org",
        "text": (
            f"The public library in {MARKER} reopened on Saturday after a two-year renovation. "
            "Mayor Clara Jensen cut the ribbon in front of several hundred visitors. "
            "The new building has a reading garden on its roof and a workshop for repairs. "
            "Opening hours will be extended to ten in the evening from next month."
        ),
    },
    {
        "id": "flower-test-ferry",
        "url": "https://example.org/news/flower-test-ferry",
        "source": "example.org",
        "text": (
            f"A new electric ferry started service between {MARKER} and Port Avery this week. "
            "The boat carries up to two hundred passengers and charges at each landing. "
            "The operator, Harbour Lines, said the crossing now takes twenty minutes. "
            "Tickets cost the same as on the old diesel ferry."
        ),
    },
]


def _settings(**values) -> Settings:
    """Settings from these values only (no .env file; no credentials unless given)."""
    values.setdefault("flower_basic_auth", None)
    return Settings(_env_file=None, **values)


# --- the command, nothing started ----------------------------------------------------------
def test_parse_basic_auth_accepts_several_users_and_hides_bad_entries():
    assert parse_basic_auth(None) == []
    assert parse_basic_auth("  ") == []
    assert parse_basic_auth("ops:pw1, viewer:p:w2") == ["ops:pw1", "viewer:p:w2"]
    with pytest.raises(FlowerConfigError) as caught:
        parse_basic_auth("ops:pw1,only-a-secret-no-colon")
    assert "entry 2 of 2" in str(caught.value)
    assert "only-a-secret" not in str(caught.value)
    for bad in (":nouser", "nopassword:", "ops:pw,"):
        with pytest.raises(FlowerConfigError):
            parse_basic_auth(bad)


def test_credentials_go_through_the_environment_not_the_command_line():
    settings = _settings(flower_basic_auth="ops:hunter2-very-secret", flower_port=5600)
    start = flower_command(settings, environ={"PATH": "/bin", "FLOWER_BASIC_AUTH": "x:y",
                                              "FLOWER_UNAUTHENTICATED_API": "true"})
    assert start.env == {"PATH": "/bin", "FLOWER_BASIC_AUTH": "ops:hunter2-very-secret"}
    assert not any("hunter2" in arg for arg in start.argv)
    assert "hunter2" not in repr(start) and "hunter2" not in repr(settings)
    assert start.argv[1:6] == ["-m", "celery", "-A", "worker.app", "flower"]
    assert "--port=5600" in start.argv and "--address=0.0.0.0" in start.argv
    assert f"--conf={CONF_FILE}" in start.argv and CONF_FILE.exists()
    assert "--read_only=true" in start.argv
    columns = next(a for a in start.argv if a.startswith("--tasks_columns=")).split("=")[1]
    assert not {"args", "kwargs", "result"} & set(columns.split(","))


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.1.2.3", "flower.example.org"])
def test_refuses_without_credentials_off_localhost(address):
    settings = _settings(flower_address=address)
    with pytest.raises(FlowerConfigError, match="ENRICH_FLOWER_BASIC_AUTH"):
        flower_command(settings)
    with pytest.raises(FlowerConfigError, match="only with --address 127.0.0.1"):
        flower_command(settings, insecure_localhost_no_auth=True)


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost", "::1"])
def test_no_auth_needs_localhost_and_the_explicit_flag(address):
    settings = _settings()
    with pytest.raises(FlowerConfigError, match="refusing"):
        flower_command(settings, address=address)
    start = flower_command(settings, address=address, insecure_localhost_no_auth=True,
                           environ={"FLOWER_BASIC_AUTH": "left:over"})
    assert start.users == 0 and "FLOWER_BASIC_AUTH" not in start.env


@pytest.mark.parametrize("arg", ["--basic_auth=a:b", "--basic-auth=a:b", "--address=0.0.0.0",
                                 "--port=1", "--unix_socket=/tmp/s", "--auth=.*", "--conf=x.py"])
def test_reserved_flower_options_cannot_be_passed_through(arg):
    settings = _settings(flower_basic_auth="ops:pw")
    with pytest.raises(FlowerConfigError, match="cannot be passed through"):
        flower_command(settings, extra=[arg])
    start = flower_command(settings, extra=["--purge_offline_workers=600"])
    assert start.argv[-1] == "--purge_offline_workers=600"


def test_scrub_task_event_hides_article_text_keeps_the_id():
    body = "The public library reopened on Saturday after a renovation."
    event = {"type": "task-received", "uuid": "u1", "name": "enrich.clean",
             "args": repr(({"id": "a-1", "url": "https://x", "text": body},)),
             "kwargs": "{}"}
    scrubbed = scrub_task_event(event)
    assert scrubbed["args"] == "<hidden: article a-1>"
    assert scrubbed["kwargs"] == "<hidden>"
    assert event["args"].count("library") == 1  # the original is not changed
    done = scrub_task_event({"type": "task-succeeded", "uuid": "u1", "result": repr(body)})
    assert done["result"] == "<hidden>"
    started = {"type": "task-started", "uuid": "u1"}
    assert scrub_task_event(started) is started


def test_scrub_task_event_names_a_batch_by_its_first_article():
    """A batch's args show as a batch with its first article's id, none of the texts."""
    articles = [{"id": "a-1", "text": "The library reopened."}, {"id": "a-2", "text": "Rain."}]
    event = {"type": "task-received", "uuid": "u2", "name": "enrich.batch",
             "args": repr((articles,)), "kwargs": "{}"}
    assert scrub_task_event(event)["args"] == "<hidden: batch, first article a-1>"


# --- real worker + real Flower --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, auth: str | None = None, timeout: float = 5,
         data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data)
    if auth is not None:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def _poll(what: str, deadline: float, check):
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _spawn(args: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    with log.open("ab") as handle:
        return subprocess.Popen([*ENRICH, *args], env=env, cwd=cwd, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_flower_shows_worker_and_every_stage_with_auth(settings_for, tmp_path):
    from worker.producer import publish

    started = time.monotonic()
    settings = settings_for(store_url=f"sqlite:///{tmp_path / 'store.db'}")
    env = settings_env(settings)
    hostname = f"flowertest-{uuid.uuid4().hex[:8]}@localhost"
    credentials = f"ops:{secrets.token_urlsafe(16)}"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    worker = flower = None
    try:
        # cwd=tmp_path: no .env file of the developer's is read by the subprocesses.
        worker = _spawn(["worker", "--concurrency", "1", "--hostname", hostname], env,
                        tmp_path / "worker.log", tmp_path)
        flower = _spawn(["flower", "--address", "127.0.0.1", "--port", str(port)],
                        {**env, "ENRICH_FLOWER_BASIC_AUTH": credentials},
                        tmp_path / "flower.log", tmp_path)
        deadline = started + 60

        # Flower's event receiver is live once it has our worker's heartbeat.
        def worker_alive():
            assert flower.poll() is None, (tmp_path / "flower.log").read_text()
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            status, body = _get(f"{base}/api/workers?status=1", credentials)
            return status == 200 and json.loads(body).get(hostname) is True

        _poll("Flower to see the worker alive", deadline, worker_alive)
        status, body = _get(f"{base}/api/workers?refresh=1&workername={hostname}", credentials)
        assert status == 200 and hostname in json.loads(body)

        # Authentication: none, wrong, right.
        for path in ("/api/workers", "/api/tasks", "/", "/tasks"):
            assert _get(base + path)[0] == 401, path
        assert _get(f"{base}/api/workers", "ops:wrong-password")[0] == 401
        # Read-only: no task submission through Flower (it would skip the producer's checks).
        assert _get(f"{base}/api/task/async-apply/enrich.article", credentials, data=b"{}")[0] == 403

        report = publish(ARTICLES, settings=settings)
        assert sorted(report.published) == sorted(a["id"] for a in ARTICLES)

        # Both articles in one message (enrich.batch); every stage of each listed as a task
        # of its own (stage events).
        expected = {BATCH_TASK: 1, **{f"enrich.{s}": 2 for s in CHAIN}}

        def every_stage_succeeded():
            status, body = _get(f"{base}/api/tasks?workername={hostname}", credentials)
            if status != 200:
                return None
            tasks = json.loads(body)
            done = {}
            for task in tasks.values():
                if task.get("state") == "SUCCESS":
                    done[task["name"]] = done.get(task["name"], 0) + 1
            return (tasks, body) if done == expected else None

        tasks, body = _poll("every stage task of both articles in Flower", deadline,
                            every_stage_succeeded)
        assert {task["worker"] for task in tasks.values()} == {hostname}
        # No article text in what Flower shows: args, kwargs, results are placeholders.
        assert MARKER not in body.decode()
        for task_id, task in tasks.items():
            assert task["args"].startswith("<hidden"), task
            assert task["kwargs"] == "<hidden>" and task["result"] == "<hidden>", task
            status, info = _get(f"{base}/api/task/info/{task_id}", credentials)
            assert status == 200 and MARKER not in info.decode()
        first = {task["args"] for task in tasks.values() if task["name"] == "enrich.clean"}
        assert first == {f"<hidden: article {a['id']}>" for a in ARTICLES}
        batch = [task["args"] for task in tasks.values() if task["name"] == BATCH_TASK]
        assert batch == [f"<hidden: batch, first article {ARTICLES[0]['id']}>"]
        # Flower leaves /healthcheck and /metrics (Prometheus) open, by design: counts and
        # names only (deploy/README.md says so).
        assert _get(f"{base}/healthcheck") == (200, b"OK")
        status, metrics = _get(f"{base}/metrics")
        assert status == 200 and b"flower_events_total" in metrics
        assert MARKER.encode() not in metrics

        # The credentials are neither on Flower's command line nor in its output.
        password = credentials.partition(":")[2]
        cmdline = Path(f"/proc/{flower.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "flower" in cmdline and password not in cmdline
        assert password not in (tmp_path / "flower.log").read_text(errors="replace")
    finally:
        _stop(flower)
        _stop(worker)
    assert time.monotonic() - started < 90


@pytest.mark.slow
def test_flower_refuses_to_start_unauthenticated_on_all_addresses(settings_for, tmp_path):
    env = settings_env(settings_for())  # no ENRICH_FLOWER_BASIC_AUTH: it drops ENRICH_*
    port = str(_free_port())
    # subprocess.run waits for its process (and kills it on timeout): nothing is left running.
    process = subprocess.run(
        [*ENRICH, "flower", "--address", "0.0.0.0", "--port", port], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=30)
    assert process.returncode == EXIT_INSECURE
    assert "refusing to start Flower without authentication on 0.0.0.0" in process.stderr
    assert "ENRICH_FLOWER_BASIC_AUTH" in process.stderr
    process = subprocess.run(
        [*ENRICH, "flower", "--address", "0.0.0.0", "--port", port,
         "--insecure-localhost-no-auth"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=30)
    assert process.returncode == EXIT_INSECURE
    assert "only with --address 127.0.0.1" in process.stderr
    assert _get(f"http://127.0.0.1:{port}/")[0] == 0  # nothing listens
