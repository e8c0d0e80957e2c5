"""The base class for every request body, so every domain validates alike.

- unknown fields are rejected;
- every string has a maximum length (`MAX_TEXT` unless the field says less);
- text is normalised to Unicode NFC;
- control characters, lone surrogates and bidi overrides are refused, except
  line breaks and tabs in fields annotated `Multiline`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationInfo,
    field_validator,
)
from pydantic_core import CoreSchema, core_schema

from smilingsteps.platform.timezones import is_iana_zone

MAX_TEXT = 10_000
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069\ufeff]")
_FORBIDDEN_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069\ufeff]")


@dataclass(frozen=True)
class Multiline:
    """Marks a text field that may hold line breaks and tabs: `Annotated[str, Multiline()]`."""


class OneOf:
    """Some members of a StrEnum: `Annotated[BookingStatus, OneOf(BookingStatus.COMPLETED, …)]`.

    The field is the enum (typed, one source of truth), but only these values are accepted,
    and the schema lists only them: a `Literal` generated from the enum, not written again.
    """

    def __init__(self, *members: StrEnum) -> None:
        if not members:
            raise ValueError("name at least one member")
        self.members = members

    def __get_pydantic_core_schema__(self, source: type[StrEnum], handler: GetCoreSchemaHandler) -> CoreSchema:
        allowed = core_schema.literal_schema([member.value for member in self.members])
        return core_schema.no_info_after_validator_function(source, allowed)


def clean_text(value: str, *, multiline: bool = False) -> str:
    """NFC-normalised text, or ValueError naming what is not allowed."""
    pattern = _FORBIDDEN_MULTILINE if multiline else _FORBIDDEN
    found = pattern.search(value)
    if found is not None:
        raise ValueError(f"contains a control or invisible formatting character (U+{ord(found.group(0)):04X})")
    text = unicodedata.normalize("NFC", value)
    return text.replace("\r\n", "\n") if multiline else text


def _clean(value: Any, multiline: bool) -> Any:
    if isinstance(value, str):
        return clean_text(value, multiline=multiline)
    if isinstance(value, list):
        return [_clean(item, multiline) for item in value]
    if isinstance(value, dict):
        return {_clean(k, False): _clean(v, multiline) for k, v in value.items()}
    return value


EARLIEST_YEAR = 2000
LATEST_YEAR = 2200


def utc_moment(value: datetime) -> datetime:
    """An aware time as UTC, refused outside 2000-2200 (beyond that, arithmetic would overflow)."""
    try:
        moment = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise ValueError(f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return moment


# An aware datetime (an offset is required), normalised to UTC and kept within a sane range.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(utc_moment)]


def supported_day(value: date) -> date:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


# A calendar day within the same range (a day after it is still a valid date).
CalendarDay = Annotated[date, AfterValidator(supported_day)]


def valid_timezone(value: str) -> str:
    if not is_iana_zone(value):
        raise ValueError("must be an IANA time zone name such as Africa/Nairobi")
    return value


def wall_clock(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("is a local time in the therapist's time zone: give it without an offset")
    return value


# A time of day on a wall clock in a known zone (HH:MM or HH:MM:SS, no offset).
LocalTime = Annotated[
    time,
    AfterValidator(wall_clock),
    Field(json_schema_extra={"pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?$"}),
]


# A zone people live in, by its exact IANA name (`Africa/Nairobi`).
TimeZoneName = Annotated[str, Field(max_length=64), AfterValidator(valid_timezone)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=MAX_TEXT, str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _normalise_text(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        multiline = field is not None and any(isinstance(m, Multiline) for m in field.metadata)
        return _clean(value, multiline)


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
