"""What Daraja's messages look like (payments/mpesa/protocol.py), including the facts that bite."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from smilingsteps.payments.mpesa import protocol
from smilingsteps.payments.mpesa.protocol import MalformedCallbackError, parse_callback


def success(**overrides: Any) -> dict[str, Any]:
    body = protocol.callback_payload(
        merchant_request_id="29115-34620561-1",
        checkout_request_id="ws_CO_191220191020363925",
        result_code=0,
        result_desc="The service request is processed successfully.",
        amount=1.0,
        receipt="NLJ7RT61SV",
        phone="254708374149",
        transaction_date=datetime(2019, 12, 19, 7, 21, 15, tzinfo=UTC),
    )
    body["Body"]["stkCallback"].update(overrides)
    return body


def test_the_timestamp_is_nairobi_time_whatever_the_servers_zone() -> None:
    moment = datetime(2027, 1, 15, 21, 30, 5, tzinfo=UTC)  # 00:30:05 the next day in Nairobi
    assert protocol.nairobi_timestamp(moment) == "20270116003005"
    with pytest.raises(ValueError, match="aware"):
        protocol.nairobi_timestamp(datetime(2027, 1, 15))


def test_the_password_is_base64_of_shortcode_passkey_and_timestamp() -> None:
    password = protocol.stk_password("174379", "passkey", "20270116003005")
    assert base64.b64decode(password) == b"174379passkey20270116003005"


def test_the_account_reference_fits_in_twelve_letters_and_digits() -> None:
    reference = protocol.account_reference("97729234-10e3-409c-a85d-fe6a2221136f")
    assert reference == "SS9772923410"
    assert len(reference) <= protocol.ACCOUNT_REFERENCE_MAX and reference.isalnum()


def test_still_processing_needs_the_message_as_well_as_the_code() -> None:
    assert protocol.is_still_processing("500.001.1001", "The transaction is being processed")
    assert not protocol.is_still_processing(
        "500.001.1001", "Unable to lock subscriber, a transaction is already in process"
    )
    assert not protocol.is_still_processing("400.002.02", "The transaction is being processed")


def test_a_success_is_read_by_item_name_whatever_the_order() -> None:
    body = success()
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"].reverse()
    parsed = parse_callback(body)
    assert parsed.succeeded
    assert parsed.amount == Decimal(1)
    assert parsed.receipt == "NLJ7RT61SV"
    assert parsed.phone == "254708374149"
    assert parsed.transaction_date == 20191219102115
    assert protocol.from_nairobi_timestamp(20191219102115) == datetime(2019, 12, 19, 7, 21, 15, tzinfo=UTC)


@pytest.mark.parametrize("amount", [1, 1.0, "1"])
def test_an_amount_may_be_one_or_one_point_zero(amount: object) -> None:
    body = success()
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"][0]["Value"] = amount
    assert parse_callback(body).amount == 1


def test_a_failure_has_no_metadata() -> None:
    body = success(ResultCode=1032, ResultDesc="Request cancelled by user")
    del body["Body"]["stkCallback"]["CallbackMetadata"]
    parsed = parse_callback(body)
    assert (parsed.result_code, parsed.result_desc, parsed.amount) == (1032, "Request cancelled by user", None)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "Body",
        {},
        {"Body": {}},
        {"Body": {"stkCallback": "yes"}},
        {"body": {"stkCallback": {}}},
    ],
)
def test_a_body_that_is_not_a_callback_is_malformed(payload: object) -> None:
    with pytest.raises(MalformedCallbackError):
        parse_callback(payload)


@pytest.mark.parametrize(
    "change",
    [
        {"ResultCode": "0"},  # a string in the query's answer, an integer in the callback
        {"ResultCode": True},
        {"ResultCode": None},
        {"CheckoutRequestID": 12},
        {"CheckoutRequestID": ""},
        {"CheckoutRequestID": "x" * 65},
        {"CheckoutRequestID": "ws_CO_\u0000"},
        {"CheckoutRequestID": "ws_CO_\u202e1"},
        {"MerchantRequestID": None},
        {"CallbackMetadata": None},
        {"CallbackMetadata": {"Item": "Amount"}},
        {"CallbackMetadata": {"Item": [{"Value": 1}]}},
        {"CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 1}] * 21}},
        {"CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 1}, {"Name": "PhoneNumber", "Value": 2547}]}},
    ],
)
def test_wrong_types_and_missing_parts_are_malformed(change: dict[str, Any]) -> None:
    with pytest.raises(MalformedCallbackError):
        parse_callback(success(**change))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Amount", "one"),
        ("Amount", -5),
        ("Amount", 0),
        ("Amount", float("nan")),
        ("Amount", 10**9),
        ("Amount", True),
        ("PhoneNumber", "+254708374149"),
        ("PhoneNumber", 2.5),
        ("MpesaReceiptNumber", 123),
        ("TransactionDate", "yesterday"),
    ],
)
def test_wrong_values_are_malformed(name: str, value: object) -> None:
    body = success()
    for item in body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]:
        if item["Name"] == name:
            item["Value"] = value
    with pytest.raises(MalformedCallbackError):
        parse_callback(body)


def test_free_text_loses_its_control_characters() -> None:
    parsed = parse_callback(success(ResultCode=1, ResultDesc="Bad\u0000 \u202edesc" + "x" * 400))
    assert "\u0000" not in parsed.result_desc and "\u202e" not in parsed.result_desc
    assert len(parsed.result_desc) <= 300


def test_balance_without_a_value_is_fine() -> None:
    items = success()["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    assert {"Name": "Balance"} in items
    assert parse_callback(success()).succeeded


def test_phone_numbers_are_masked_for_people_and_logs() -> None:
    assert protocol.masked_phone("254712345678") == "2547…678"
