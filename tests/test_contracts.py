"""Raw article v1 validation and the published JSON schemas."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from worker.contracts import Entity, derive_id, json_schemas, validate_raw
from worker.errors import InvalidArticle, TooLarge

LIMITS = {"max_text_bytes": 1_000, "max_html_bytes": 2_000}
TEXT = "The harbour council voted on Tuesday to keep the last ferry running."


def valid(**fields):
    return validate_raw({"text": TEXT, **fields}, **LIMITS)


def rejected(record, **limits) -> InvalidArticle:
    with pytest.raises(InvalidArticle) as info:
        validate_raw(record, **{**LIMITS, **limits})
    return info.value


# --- content ---------------------------------------------------------------------------------
def test_minimal_text_record_is_accepted():
    """A record with only text is valid and comes back with every field of the contract."""
    article = valid()
    assert article["text"] == TEXT
    assert article["html"] is None and article["url"] is None
    assert article["metadata"] == {}
    assert set(article) == {"id", "url", "source", "title", "text", "html", "published_at",
                            "language", "metadata"}


def test_html_only_record_is_accepted():
    """A record with only html is valid."""
    article = validate_raw({"html": "<p>Ferry stays.</p>"}, **LIMITS)
    assert article["html"] == "<p>Ferry stays.</p>"


@pytest.mark.parametrize("record", [
    {},
    {"url": "https://example.org/a"},
    {"text": "   \n\t "},
    {"text": "", "html": "  "},
    {"text": None, "html": None},
], ids=["empty", "url-only", "blank-text", "blank-both", "nulls"])
def test_record_without_text_or_html_is_rejected(record):
    """Neither text nor html with content is an invalid article, and the message says so."""
    error = rejected(record)
    assert error.reason == "invalid_article"
    assert "neither text nor html" in error.message


@pytest.mark.parametrize(("field", "value"), [
    ("text", 123),
    ("text", ["a", "b"]),
    ("html", {"p": "x"}),
    ("title", True),
    ("url", 42),
    ("metadata", "not an object"),
    ("metadata", [1, 2]),
    ("published_at", 20250102),
    ("id", 7),
])
def test_wrong_types_are_rejected_naming_the_field(field, value):
    """A field of the wrong JSON type is rejected and the message names the field."""
    error = rejected({"text": TEXT, field: value})
    assert error.message.startswith(f"{field}:") or f"{field}:" in error.message


@pytest.mark.parametrize("value", ["yesterday", "2025-13-01", "03/07/2022", "2025-01-02T25:00", ""])
def test_bad_published_at_is_rejected(value):
    """published_at must be ISO 8601."""
    assert "published_at" in rejected({"text": TEXT, "published_at": value}).message


@pytest.mark.parametrize(("value", "expected"), [
    ("2022-07-03", "2022-07-03T00:00:00"),
    ("2022-07-03T10:15:00Z", "2022-07-03T10:15:00+00:00"),
    ("2022-07-03T10:15:00+02:00", "2022-07-03T10:15:00+02:00"),
])
def test_published_at_is_normalised_to_iso(value, expected):
    """Dates and date-times (with Z or an offset) come back as ISO 8601 date-times."""
    assert valid(published_at=value)["published_at"] == expected


@pytest.mark.parametrize("field", ["text", "title", "url", "source", "language"])
def test_nul_character_is_rejected(field):
    """A NUL character in any string field but html is rejected, naming the field."""
    record = {"text": TEXT, field: "before\x00after"}
    error = rejected(record)
    assert field in error.message and "NUL" in error.message


def test_nul_character_in_html_is_dropped():
    """A NUL in html is dropped, as an HTML parser would: the page is accepted without it."""
    article = validate_raw({"html": "<p>Ferry\x00 stays.</p>\x00"}, **LIMITS)
    assert article["html"] == "<p>Ferry stays.</p>"


def test_html_of_nul_characters_only_has_no_content():
    """html that is only NUL characters is empty once they are dropped: no content."""
    assert "neither text nor html" in rejected({"html": "\x00\x00"}).message


def test_nul_character_in_metadata_is_rejected():
    """A NUL character inside metadata (value or key) is rejected too: stores cannot hold it."""
    assert "NUL" in rejected({"text": TEXT, "metadata": {"note": "a\x00b"}}).message
    assert "NUL" in rejected({"text": TEXT, "metadata": {"deep": [{"k\x00": 1}]}}).message


def test_escaped_looking_text_in_metadata_is_accepted():
    """A literal backslash-u0000 in metadata is just text, not a NUL character."""
    metadata = {"note": "\\u0000 is how JSON spells NUL", "path": "C:\\\\u0000"}
    assert valid(metadata=metadata)["metadata"] == metadata


@pytest.mark.parametrize("field", ["text", "html", "title"])
def test_lone_surrogate_is_rejected(field):
    """A lone surrogate (from a \\ud800 JSON escape) is not valid Unicode and is rejected."""
    record = json.loads('{"text": "%s", "%s": "bad \\ud800 here"}' % (TEXT, field))
    error = rejected(record)
    assert field in error.message and "unicode" in error.message.lower()


def test_lone_surrogate_in_metadata_is_rejected():
    """A lone surrogate inside metadata is rejected."""
    record = json.loads('{"text": "ok text here", "metadata": {"k": "\\udc00"}}')
    assert "metadata" in rejected(record).message


def test_unknown_field_is_rejected():
    """Fields outside the contract are refused, naming the field."""
    error = rejected({"text": TEXT, "body": "something"})
    assert "body" in error.message


@pytest.mark.parametrize("record", [["text"], "just a string", 42, None, True],
                         ids=["list", "str", "int", "null", "bool"])
def test_non_object_record_is_rejected(record):
    """A record that is not a JSON object is rejected, saying what it was."""
    error = rejected(record)
    assert "not an object" in error.message


def test_too_large_text_is_rejected_as_too_large():
    """Text over the byte limit raises TooLarge with reason too_large."""
    with pytest.raises(TooLarge) as info:
        validate_raw({"text": "a" * 1_001}, **LIMITS)
    assert info.value.reason == "too_large"
    assert "text" in info.value.message


def test_text_limit_counts_utf8_bytes():
    """The limit is in UTF-8 bytes: 400 three-byte characters (1,200 bytes) are too large."""
    with pytest.raises(TooLarge):
        validate_raw({"text": "€" * 400}, **LIMITS)
    assert validate_raw({"text": "€" * 333}, **LIMITS)["text"] == "€" * 333


def test_too_large_html_is_rejected_as_too_large():
    """HTML over its own byte limit raises TooLarge naming html."""
    with pytest.raises(TooLarge) as info:
        validate_raw({"text": TEXT, "html": "<p>" + "x" * 2_000 + "</p>"}, **LIMITS)
    assert "html" in info.value.message


def test_text_at_the_limit_is_accepted():
    """Exactly max_text_bytes is still accepted."""
    assert len(validate_raw({"text": "a" * 1_000}, **LIMITS)["text"]) == 1_000


@pytest.mark.parametrize("value", ["has space", "a" * 201, "", "semi;colon", "ü"])
def test_bad_id_is_rejected(value):
    """An explicit id must be 1-200 characters of the safe set."""
    assert "id" in rejected({"text": TEXT, "id": value}).message


# --- ids -------------------------------------------------------------------------------------
def test_explicit_id_is_kept():
    """A valid explicit id is used as given."""
    assert valid(id="gazette:2025/ferry-1.v2")["id"] == "gazette:2025/ferry-1.v2"


def test_id_derived_from_url_ignores_content():
    """Without an id, the id comes from the url: same url, same id, whatever the text."""
    a = valid(url="https://example.org/ferry")
    b = validate_raw({"url": "https://example.org/ferry", "text": "Other words entirely."}, **LIMITS)
    c = valid(url="https://example.org/other")
    assert a["id"] == b["id"] != c["id"]
    assert a["id"] == derive_id("https://example.org/ferry", None, None)


def test_id_derived_from_content_without_url():
    """Without id or url the id comes from the content: same text, same id; other text, other id."""
    a = validate_raw({"text": TEXT}, **LIMITS)
    b = validate_raw({"text": TEXT}, **LIMITS)
    c = validate_raw({"text": TEXT + " More."}, **LIMITS)
    d = validate_raw({"html": "<p>x</p>"}, **LIMITS)
    assert a["id"] == b["id"] != c["id"]
    assert d["id"] == derive_id(None, None, "<p>x</p>") != a["id"]


def test_derived_id_is_stable_and_valid():
    """A derived id is a fixed-length hex string that itself passes the id rule."""
    article = valid(url="https://example.org/ferry")
    assert len(article["id"]) == 16 and int(article["id"], 16) >= 0
    assert valid(id=article["id"])["id"] == article["id"]
    assert derive_id("  ", TEXT, None) == derive_id(None, TEXT, None)


# --- language hint ---------------------------------------------------------------------------
@pytest.mark.parametrize(("hint", "code"), [
    ("en-GB", "en"), ("EN", "en"), ("pt_BR", "pt"), ("zh-TW", "zh"), ("zh-Hans", "zh"),
    ("zh", "zh"), (" de ", "de"), ("", None), ("   ", None), (None, None),
])
def test_language_hint_is_normalised(hint, code):
    """Language hints become lower-case ISO 639-1 (regions dropped, Chinese variants -> zh)."""
    assert valid(language=hint)["language"] == code


def test_metadata_kept_as_given():
    """Plain JSON metadata passes through unchanged."""
    metadata = {"section": "local", "tags": ["ferry", "council"], "score": 1.5, "ok": True,
                "none": None}
    assert valid(metadata=metadata)["metadata"] == metadata


# --- schemas ---------------------------------------------------------------------------------
def test_json_schemas_has_both_contracts():
    """json_schemas() publishes raw article v1 and enriched document v1."""
    schemas = json_schemas()
    assert set(schemas) == {"raw_article_v1", "enriched_document_v1"}
    assert schemas["raw_article_v1"]["title"] == "RawArticleV1"
    assert schemas["enriched_document_v1"]["title"] == "EnrichedDocumentV1"
    assert schemas["raw_article_v1"]["additionalProperties"] is False
    json.dumps(schemas)  # serialisable as published


def test_enriched_schema_lists_required_fields():
    """The enriched schema requires every field a consumer relies on."""
    required = set(json_schemas()["enriched_document_v1"]["required"])
    assert {"id", "url", "source", "title", "published_at", "language", "text", "removed",
            "entities", "dedupe", "pipeline", "processed_at"} <= required


def test_raw_schema_properties_match_contract():
    """The raw schema's properties are exactly the accepted fields; none is required."""
    schema = json_schemas()["raw_article_v1"]
    assert set(schema["properties"]) == {"id", "url", "source", "title", "text", "html",
                                         "published_at", "language", "metadata"}
    assert not schema.get("required")


# --- entities: place entities carry geo -------------------------------------------------------
GEO = {"geonameid": 704508, "name": "Kramatorsk", "country_code": "UA", "lat": 48.73106,
       "lon": 37.56779, "feature": "city"}


def test_entity_geo_is_optional():
    """An entity without geo (a person, or a place the gazetteer lacks) is valid; geo is null."""
    entity = Entity.model_validate({"text": "Sergei Shoigu", "label": "PERSON", "count": 2,
                                    "mentions": [{"start": 0, "end": 13}, {"start": 40, "end": 46}]})
    assert entity.geo is None


def test_entity_with_geo_round_trips():
    """A place entity's geo (GeoNames id, name, country, coordinates, feature) is kept as is."""
    record = {"text": "Kramatorsk", "label": "GPE", "count": 1,
              "mentions": [{"start": 5, "end": 15}], "geo": GEO}
    assert Entity.model_validate(record).model_dump(mode="json") == record


@pytest.mark.parametrize(("field", "value"), [
    ("feature", "village"), ("lat", 91.0), ("lon", -181.0), ("geonameid", "abc"),
])
def test_entity_geo_rejects_bad_values(field, value):
    """Unknown features and impossible coordinates are rejected."""
    with pytest.raises(ValidationError):
        Entity.model_validate({"text": "X", "label": "GPE", "count": 1, "mentions": [],
                               "geo": {**GEO, field: value}})


def test_entity_geo_continent_has_no_country():
    """A continent has no country code."""
    geo = {**GEO, "country_code": None, "feature": "continent", "name": "Europe"}
    assert Entity.model_validate({"text": "Europe", "label": "LOC", "count": 1, "mentions": [],
                                  "geo": geo}).geo.country_code is None


def test_enriched_schema_describes_entity_geo():
    """The published schema lists geo on entities, with its features."""
    defs = json_schemas()["enriched_document_v1"]["$defs"]
    assert "geo" in defs["Entity"]["properties"]
    assert set(defs["Geo"]["properties"]["feature"]["enum"]) == {
        "continent", "country", "admin1", "city"}
