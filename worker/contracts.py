"""Message contracts: raw article v1 (what scrapers publish) and enriched document v1.

Cheap to import (pydantic only): the producer and scrapers use it.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import InvalidArticle, TooLarge

RAW_VERSION = 1
ENRICHED_VERSION = 1
# A \u0000 escape in JSON text: an odd run of backslashes before u0000 (an even run is
# escaped backslashes followed by the letters "u0000").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _check_string(value: str, field: str) -> str:
    if field == "html":
        # An HTML parser ignores NUL characters (a parse error in the HTML standard; libxml2
        # cannot hold them), so a page with one is still a page: they are dropped here
        # rather than the page rejected. Anywhere else a NUL is an error, and html never
        # reaches a store either way (it does not leave the cleaning stage).
        value = value.replace("\x00", "")
    if "\x00" in value:
        raise ValueError(f"{field} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates from a \ud800 escape
        raise ValueError(f"{field} is not valid Unicode ({exc.reason})") from None
    return value


class RawArticle(BaseModel):
    """Raw article v1: one scraped article as a scraper publishes it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, title="RawArticleV1")

    id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:\-/]+$",
        description="Stable document id; default: derived from url, else from the content.",
    )
    url: str | None = Field(None, max_length=4096)
    source: str | None = Field(None, max_length=500)
    title: str | None = Field(None, max_length=2000)
    text: str | None = Field(None, description="Scraped text (boilerplate and all).")
    html: str | None = Field(None, description="Page HTML.")
    published_at: str | None = Field(None, description="ISO 8601 date or date-time.")
    language: str | None = Field(
        None, max_length=16, description="Scraper's language hint (ISO 639-1, e.g. `en`)."
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form object.")

    @field_validator("url", "source", "title", "text", "html", "language")
    @classmethod
    def _clean_strings(cls, value: str | None, info) -> str | None:
        return None if value is None else _check_string(value, info.field_name)

    @field_validator("published_at")
    @classmethod
    def _iso8601(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"published_at is not ISO 8601: {value[:40]!r}") from None
        return parsed.isoformat()

    @field_validator("language")
    @classmethod
    def _language_code(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        code = value.strip().lower().replace("_", "-")
        return "zh" if code.startswith("zh") else code.split("-")[0]

    @field_validator("metadata")
    @classmethod
    def _metadata_is_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            encoded = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata is not plain JSON: {exc}") from None
        _check_string(encoded, "metadata")
        if _ESCAPED_NUL.search(encoded):  # json.dumps writes NUL as the escape \u0000
            raise ValueError("metadata contains a NUL character")
        return value

    @model_validator(mode="after")
    def _needs_content(self) -> RawArticle:
        if not (self.text and self.text.strip()) and not (self.html and self.html.strip()):
            raise ValueError("neither text nor html has content")
        return self


def derive_id(url: str | None, text: str | None, html: str | None) -> str:
    basis = url.strip() if url and url.strip() else (text or html or "")
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def validate_raw(record: Any, *, max_text_bytes: int, max_html_bytes: int) -> dict[str, Any]:
    """Check one record against raw article v1 and return it normalised, with its id.

    Raises InvalidArticle (or TooLarge) with a message that names the field.
    """
    if not isinstance(record, dict):
        raise InvalidArticle(f"record is a JSON {type(record).__name__}, not an object")
    for field, limit in (("text", max_text_bytes), ("html", max_html_bytes)):
        value = record.get(field)
        if isinstance(value, str) and len(value) > limit // 4:  # cheap pre-check before encoding
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > limit:
                raise TooLarge(f"{field} is {size:,} bytes, over the {limit:,}-byte limit")
    try:
        article = RawArticle.model_validate(record)
    except ValidationError as exc:
        raise InvalidArticle(_describe(exc)) from None
    data = article.model_dump()
    if not data["id"]:
        data["id"] = derive_id(article.url, article.text, article.html)
    return data


# --- the enriched document -----------------------------------------------------------------
class Language(BaseModel):
    code: str = Field(description="ISO 639-1 code, or `und` when undetermined.")
    confidence: float = Field(ge=0, le=1)
    method: str | None = Field(None, description="How it was decided (model, hint, too_short).")


class Removed(BaseModel):
    text: str
    reason: str


class Mention(BaseModel):
    start: int
    end: int


class Geo(BaseModel):
    """The GeoNames place a place entity names (the entity stage's gazetteer)."""

    geonameid: int = Field(description="GeoNames id: https://www.geonames.org/<geonameid>.")
    name: str = Field(description="The place's GeoNames name (Kyiv for \"Kiev\", \"Києві\").")
    country_code: str | None = Field(
        None, description="ISO 3166-1 alpha-2; null for a continent."
    )
    lat: float | None = Field(
        None, ge=-90, le=90,
        description="Latitude (WGS84); a country's is its capital's; null when unknown.",
    )
    lon: float | None = Field(None, ge=-180, le=180, description="Longitude (WGS84).")
    feature: Literal["continent", "country", "admin1", "city"]


class Entity(BaseModel):
    text: str
    label: str
    count: int
    mentions: list[Mention]
    geo: Geo | None = Field(
        None, description="Place entities (GPE, LOC, FAC) found in the gazetteer: where."
    )


class Dedupe(BaseModel):
    content_hash: str
    duplicate_of: str | None
    similarity: float | None


class Pipeline(BaseModel):
    version: str
    timings_ms: dict[str, float]
    notes: dict[str, str] = Field(default_factory=dict, description="Skipped work and why.")


class EnrichedDocument(BaseModel):
    """Enriched document v1: what the store holds and `enrich get` prints."""

    model_config = ConfigDict(title="EnrichedDocumentV1")

    schema_version: Literal[1] = 1
    id: str
    url: str | None
    source: str | None
    title: str | None
    published_at: str | None
    language: Language
    text: str
    removed: list[Removed]
    entities: list[Entity]
    dedupe: Dedupe
    pipeline: Pipeline
    metadata: dict[str, Any] = Field(default_factory=dict)
    processed_at: str


def json_schemas() -> dict[str, Any]:
    return {
        "raw_article_v1": RawArticle.model_json_schema(),
        "enriched_document_v1": EnrichedDocument.model_json_schema(),
    }
