"""What goes over the wire: task bodies as UTF-8 JSON, stage events and stored documents
encoded by orjson, each with a fallback where the fast path refuses the data."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from kombu.utils.json import dumps as kombu_dumps

from tests.workers import start_worker, stop_worker, wait_until
from worker.app import JSON_UTF8, create_app, dumps_utf8
from worker.producer import publish
from worker.stage_events import _encode, _event_ids
from worker.store import doc_json, open_store

RUSSIAN = ("Министерство обороны сообщило о новых учениях в Калининградской области. "
           "По словам представителя ведомства, в них участвуют около двух тысяч человек. ")
UKRAINIAN = ("Київ отримав нову партію обладнання для енергетичних підприємств країни. "
             "Уряд очікує, що ремонт завершать до початку зими. ")


def articles(prefix: str) -> list[dict]:
    return [{"id": f"{prefix}-ru", "title": "Учения", "text": RUSSIAN * 3},
            {"id": f"{prefix}-uk", "title": "Обладнання", "text": UKRAINIAN * 3}]


def test_a_batch_message_carries_cyrillic_as_utf8_not_escapes(settings_for, redis_client):
    """A published batch's body is UTF-8 JSON: the text's own bytes, no \\u escapes, smaller
    than kombu's escaped JSON of the same arguments, and it decodes to the articles."""
    settings = settings_for()
    sent = articles("wire")
    report = publish(sent, settings=settings, batch_size=16)
    assert len(report.published) == 2
    (item,) = redis_client.lrange(settings.queue, 0, -1)
    envelope = json.loads(item)
    assert envelope["content-type"] == "application/json"
    assert envelope["headers"]["task"] == "enrich.batch"
    body = base64.b64decode(envelope["body"])
    assert RUSSIAN.encode("utf-8") in body and UKRAINIAN.encode("utf-8") in body
    assert b"\\u04" not in body
    args, kwargs, _ = json.loads(body)
    assert [a["text"] for a in args[0]] == [a["text"] for a in sent]
    escaped = json.dumps([[args[0]], {}, {}]).encode()  # what kombu's "json" would send
    assert len(body) < 0.6 * len(escaped)


def test_a_worker_enriches_messages_in_both_json_spellings(tmp_path, settings_for):
    """A worker stores, text intact, an article sent as UTF-8 JSON and one sent as kombu's
    ASCII-escaped JSON (an older publisher)."""
    settings = settings_for()
    app = create_app(settings)
    new, old = articles("spell")
    app.send_task("enrich.article", args=(new,), queue=settings.queue, serializer=JSON_UTF8)
    app.send_task("enrich.article", args=(old,), queue=settings.queue, serializer="json")
    worker = start_worker(settings, tmp_path / "worker.log")
    store = open_store(settings.store_url)
    try:
        for sent in (new, old):
            doc = wait_until(lambda sent=sent: store.get(sent["id"]), 120,
                             what=f"{sent['id']} stored")
            assert doc["title"] == sent["title"]
            assert doc["text"].split()[:3] == sent["text"].split()[:3]
            assert doc["language"]["code"] == sent["id"].rsplit("-", 1)[1]
    finally:
        stop_worker(worker)
        store.close()


def test_dumps_utf8_escapes_text_that_is_not_utf8_as_kombu_does():
    """A lone surrogate cannot be UTF-8: the body falls back to kombu's escaped JSON."""
    obj = [[{"id": "s", "text": "a\ud800b жук"}], {}, {}]
    body = dumps_utf8(obj)
    assert body == kombu_dumps(obj).encode("ascii")
    assert json.loads(body) == obj
    assert dumps_utf8([["жук"], {}, {}]) == '[["жук"], {}, {}]'.encode()


def test_stage_event_ids_are_uuids_unique_within_and_across_runs():
    """Each run numbers its events under a random UUID: no id repeats, each parses as a UUID."""
    runs = [_event_ids() for _ in range(50)]
    ids = [next(run) for run in runs for _ in range(200)]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)


def test_stage_events_encode_to_the_json_celery_would_send():
    """orjson's bytes decode to the events; text orjson refuses falls back to escaped JSON."""
    events = [{"type": "task-succeeded", "uuid": "u", "clock": 3, "runtime": 0.0123,
               "args": "({'id': 'жук'},)", "received": 1765000000.123456, "result": ""}]
    assert json.loads(_encode(events)) == events
    odd = [{**events[0], "exception": "bad \ud800 text"}]
    assert json.loads(_encode(odd)) == odd


@pytest.mark.parametrize("value", [2 ** 70, "zebra жук", 0.1, -3])
def test_documents_orjson_refuses_are_stored_as_the_standard_library_writes_them(value):
    """doc_json gives the same document back either way (an integer past 64 bits included)."""
    doc = {"id": "d", "metadata": {"n": value}, "entities": [{"text": "жук"}]}
    assert json.loads(doc_json(doc)) == doc
