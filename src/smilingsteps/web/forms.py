"""Forms: read a posted form within bounds, validate it with the API's own schemas, and say
what is wrong next to each field in the reader's language.

Pages validate with the same request models the API uses, so a page accepts exactly what
the API accepts; only the messages differ (plain words, translated, per field).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from smilingsteps.platform.errors import AppError, BadRequestError
from smilingsteps.platform.i18n import N_

M = TypeVar("M", bound=BaseModel)
__all__ = ["N_", "FormErrors", "explain", "from_app_error", "read_form", "text", "texts", "validate", "whole_numbers"]
MAX_FIELDS = 64
MAX_FIELD_BYTES = 16 * 1024


# Messages by the kind of problem pydantic found; %(limit)s is the rule's bound.
_BY_KIND: Mapping[str, str] = {
    "missing": N_("Fill in this field."),
    "string_too_short": N_("Fill in this field."),
    "string_too_long": N_("This is too long: at most %(limit)s characters."),
    "too_short": N_("Choose at least %(limit)s."),
    "too_long": N_("Choose at most %(limit)s."),
    "int_parsing": N_("Enter a whole number."),
    "int_type": N_("Enter a whole number."),
    "greater_than_equal": N_("Enter at least %(limit)s."),
    "less_than_equal": N_("Enter at most %(limit)s."),
    "enum": N_("Choose one of the options."),
    "literal_error": N_("Choose one of the options."),
    "time_parsing": N_("Enter a time like 09:30."),
    "date_from_datetime_parsing": N_("Enter a date like 2027-01-18."),
    "date_parsing": N_("Enter a date like 2027-01-18."),
}
# What to say when a field is left empty, so that a list of problems names each one.
_MISSING: Mapping[str, str] = {
    "full_name": N_("Enter your full name."),
    "email": N_("Enter your email address."),
    "phone": N_("Enter your mobile number."),
    "password": N_("Enter your password."),
    "current_password": N_("Enter your current password."),
    "new_password": N_("Enter a new password."),
    "code": N_("Enter the 6-digit code from your authenticator app."),
    "license_number": N_("Enter your licence number."),
    "years_of_practice": N_("Enter your years of practice."),
    "price_kes": N_("Enter your price per session."),
    "specialties": N_("Choose at least one thing you help with."),
    "languages": N_("Choose at least one language."),
}
# Messages for fields whose rule a person cannot guess from the kind alone.
_BY_FIELD: Mapping[str, str] = {
    "email": N_("Enter an email address like name@example.com."),
    "phone": N_("Enter a Kenyan mobile number such as 0712 345 678."),
    "timezone": N_("Choose a time zone from the list."),
    "code": N_("Enter the 6-digit code from your authenticator app."),
    "recovery_code": N_("Enter one of your recovery codes, like ABCD-EFGH-IJKL-MNOP."),
}


@dataclass
class FormErrors:
    """What is wrong, per field (in the form's order), plus anything about the form as a whole."""

    fields: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)

    def add(self, name: str, message: str) -> None:
        self.fields.setdefault(name, message)


async def read_form(request: Request) -> dict[str, Any]:
    """The posted fields as text (repeated names as lists); files are refused: no page here uploads yet."""
    try:
        form = await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except Exception as exc:  # python-multipart's and Starlette's parse errors differ by version
        if isinstance(exc, AppError):
            raise
        raise BadRequestError("The form could not be read.") from None
    data: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            raise BadRequestError("This form takes no files.")
        if name in data:
            existing = data[name]
            data[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            data[name] = value
    return data


def text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name, "")
    return value if isinstance(value, str) else ""


def texts(data: Mapping[str, Any], name: str) -> list[str]:
    value = data.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def whole_numbers(values: dict[str, Any], *names: str) -> dict[str, Any]:
    """Form fields that the API takes as JSON integers: digits become numbers (anything else stays
    text, which the schema then refuses as not a number)."""
    for name in names:
        value = values.get(name)
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            values[name] = int(value.strip())
    return values


def _limit(error: Mapping[str, Any]) -> str:
    context = error.get("ctx") or {}
    for key in ("max_length", "min_length", "ge", "le", "max", "min"):
        if key in context:
            return str(context[key])
    return ""


def explain(exc: ValidationError, gettext: Callable[[str], str]) -> FormErrors:
    errors = FormErrors()
    for item in exc.errors():
        location = [str(part) for part in item.get("loc", ()) if not isinstance(part, int)]
        name = location[0] if location else "form"
        kind = str(item.get("type", ""))
        empty = kind in ("missing", "string_too_short", "too_short") and not _limit(item).strip("1")
        if empty and name in _MISSING:
            message = gettext(_MISSING[name])
        elif kind in ("missing", "string_too_short") and not _limit(item).strip("1"):
            message = gettext(_BY_KIND["missing"])
        elif name in _BY_FIELD and kind not in ("missing", "string_too_long"):
            message = gettext(_BY_FIELD[name])
        elif kind == "value_error" and "must be a number" in str(item.get("msg", "")):
            message = gettext(_BY_KIND["int_parsing"])
        elif kind in _BY_KIND:
            message = gettext(_BY_KIND[kind]) % {"limit": _limit(item)}
        else:
            message = gettext(N_("Check this field."))
        errors.add(name, message)
    return errors


def validate(
    model: type[M], data: Mapping[str, Any], gettext: Callable[[str], str], *, drop_empty: bool = False
) -> M | FormErrors:
    """The form as the API's request model, or what is wrong with it. `drop_empty` leaves out empty
    optional fields (so their defaults apply), as a form always sends every input."""
    values = {key: value for key, value in data.items() if key != "csrf_token"}
    if drop_empty:
        values = {key: value for key, value in values.items() if value not in ("", [])}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        return explain(exc, gettext)


def from_app_error(error: AppError, gettext: Callable[[str], str]) -> FormErrors:
    """A service's refusal, shown on the form: per field when it names fields, else for the form."""
    found = FormErrors()
    for item in error.errors or ():
        message = item.get("message") or error.detail
        # The API's field messages may be fragments ("is not correct") read after the field's name;
        # a page shows the whole sentence of the problem's detail instead.
        found.add(item.get("field", "form"), gettext(error.detail if message[:1].islower() else message))
    if not found.fields:
        found.general.append(gettext(error.detail))
    return found
