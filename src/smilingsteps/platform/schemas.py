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
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from smilingsteps.platform.timezones import is_iana_zone, zone_names

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
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$",
            "description": "a local wall-clock time, HH:MM or HH:MM:SS, without an offset",
        }
    ),
]


# A zone people live in, by its exact IANA name (`Africa/Nairobi`).
TimeZoneName = Annotated[
    str,
    Field(max_length=64, json_schema_extra=lambda schema: schema.update(enum=sorted(zone_names()))),
    AfterValidator(valid_timezone),
]


# The text rules above, as JSON Schema patterns (ECMA 262): what `clean_text` refuses, and for a
# field that may not be empty, at least one character that is not a space (values are stripped).
# (Lone surrogates, also refused, cannot be named in a schema pattern: JSON text in UTF-8 carries none.)
_INVISIBLE = r"\u007f-\u009f\u202a-\u202e\u2066-\u2069\ufeff"
_TEXT_CLASS = r"[^\u0000-\u001f" + _INVISIBLE + "]"
_MULTILINE_CLASS = r"[^\u0000-\u0008\u000b\u000c\u000e-\u001f" + _INVISIBLE + "]"


def _text_pattern(*, multiline: bool, required: bool) -> str:
    allowed = _MULTILINE_CLASS if multiline else _TEXT_CLASS
    return ("^(?=[\\s\\S]*\\S)" if required else "^") + allowed + "*$"


def _state_text_rules(schema: dict[str, Any], *, multiline: bool) -> None:
    """Add the text pattern to every plain string in `schema` (one without a pattern, enum or format)."""
    for option in schema.get("anyOf", ()):
        _state_text_rules(option, multiline=multiline)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        _state_text_rules(schema["items"], multiline=multiline)
    if schema.get("type") != "string" or {"pattern", "enum", "format", "const"} & schema.keys():
        return
    schema["pattern"] = _text_pattern(multiline=multiline, required=schema.get("minLength", 0) > 0)


def json_number(value: Any) -> Any:
    """A JSON number, not text or a flag: `"2000"` and `false` are refused (`2000.0` is a JSON Schema integer)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number, not text or true/false")
    return value


# For an int field in a body, after its constraints (so the schema keeps minimum/maximum):
# `Annotated[int, Field(ge=0), NUMBER]` takes 2000 or 2000.0 (a JSON Schema integer), never "2000" or false.
NUMBER = BeforeValidator(json_number)


class RequestModel(BaseModel):
    """Unknown fields are refused; text follows the rules above (stated in the schema as patterns);
    numbers in bodies take `NUMBER` (JSON numbers only)."""

    model_config = ConfigDict(extra="forbid", str_max_length=MAX_TEXT, str_strip_whitespace=True)
    # Optional fields of which a body must hold exactly one (checked, and stated as `oneOf`).
    exactly_one: ClassVar[tuple[str, ...]] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _normalise_text(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        multiline = field is not None and any(isinstance(m, Multiline) for m in field.metadata)
        return _clean(value, multiline)

    @model_validator(mode="after")
    def _one_of_each_group(self) -> Self:
        given = [name for name in self.exactly_one if name in self.model_fields_set]
        if self.exactly_one and (len(given) != 1 or getattr(self, given[0]) is None):
            raise ValueError(f"send exactly one of {', '.join(self.exactly_one)} (and not null)")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core))
        for name, field in cls.model_fields.items():
            prop = schema.get("properties", {}).get(field.alias or name)
            if prop is not None:
                _state_text_rules(prop, multiline=any(isinstance(m, Multiline) for m in field.metadata))
        if cls.exactly_one:
            schema["oneOf"] = [{"required": [name]} for name in cls.exactly_one]
            for name in cls.exactly_one:  # present means given, and not as null
                prop = schema["properties"][name]
                prop.pop("default", None)
                options = [option for option in prop.pop("anyOf", [prop]) if option.get("type") != "null"]
                prop.update(options[0] if len(options) == 1 else {"anyOf": options})
        return schema


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
