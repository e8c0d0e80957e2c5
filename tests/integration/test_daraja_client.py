"""The Daraja client against the simulator over real HTTP: tokens, retries, and every kind of bad answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from smilingsteps.payments.mpesa import protocol
from smilingsteps.payments.mpesa.client import (
    DarajaClient,
    DarajaConfig,
    DarajaRefusedError,
    DarajaUnavailableError,
)
from smilingsteps.payments.mpesa.simulator import (
    DEFAULT_KEY,
    DEFAULT_PASSKEY,
    DEFAULT_SECRET,
    DEFAULT_SHORTCODE,
    DarajaSimulator,
    serving,
)

NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
CALLBACK = "http://127.0.0.1:9/api/v1/payments/mpesa/callback/t0k3n-t0k3n-t0k3n-t0k3n"


class Delays:
    """Stands in for asyncio.sleep in the retry loop: records the backoff, waits for nothing."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[DarajaSimulator, DarajaConfig]]:
    daraja = DarajaSimulator(delay=3600)  # no callback during these tests
    async with serving(daraja) as url:
        yield (
            daraja,
            DarajaConfig(
                base_url=url,
                consumer_key=DEFAULT_KEY,
                consumer_secret=DEFAULT_SECRET,
                shortcode=DEFAULT_SHORTCODE,
                passkey=DEFAULT_PASSKEY,
                read_timeout=2.0,
            ),
        )


async def push(client: DarajaClient, phone: str = "254712345670") -> str:
    accepted = await client.stk_push(
        amount=2500, phone=phone, account_reference="SS1234567890", callback_url=CALLBACK, now=NOW
    )
    return accepted.checkout_request_id


async def test_one_token_is_fetched_for_many_concurrent_calls(
    simulator: tuple[DarajaSimulator, DarajaConfig],
) -> None:
    daraja, config = simulator
    client = DarajaClient(config)
    try:
        tokens = await asyncio.gather(*(client.token() for _ in range(20)))
        assert len(set(tokens)) == 1
        assert len(daraja._tokens) == 1
    finally:
        await client.close()


async def test_the_token_is_renewed_a_minute_before_it_expires(
    simulator: tuple[DarajaSimulator, DarajaConfig],
) -> None:
    _, config = simulator
    clock = [1000.0]
    client = DarajaClient(config, monotonic=lambda: clock[0])
    try:
        first = await client.token()
        clock[0] += 3599 - 61  # expires_in "3599", a string in Daraja's answer
        assert await client.token() == first
        clock[0] += 2
        assert await client.token() != first
    finally:
        await client.close()


async def test_a_revoked_token_is_replaced_once(simulator: tuple[DarajaSimulator, DarajaConfig]) -> None:
    daraja, config = simulator
    client = DarajaClient(config)
    try:
        await client.token()
        daraja._tokens.clear()  # Daraja no longer knows it
        assert (await push(client)).startswith("ws_CO_")
    finally:
        await client.close()


async def test_wrong_credentials_are_refused(simulator: tuple[DarajaSimulator, DarajaConfig]) -> None:
    _, config = simulator
    for wrong in (replace(config, consumer_secret="nope"), replace(config, passkey="nope")):
        client = DarajaClient(wrong)
        try:
            with pytest.raises(DarajaRefusedError) as refused:
                await push(client)
            assert refused.value.error_code is not None and refused.value.request_id
        finally:
            await client.close()


async def test_the_query_says_still_processing_until_m_pesa_decides(
    simulator: tuple[DarajaSimulator, DarajaConfig],
) -> None:
    daraja, config = simulator
    client = DarajaClient(config)
    try:
        checkout = await push(client)
        answer = await client.stk_query(checkout, now=NOW)
        assert answer.still_processing and answer.result_code is None
        daraja.pushes[checkout].decided_at = 0  # decided now
        answer = await client.stk_query(checkout, now=NOW)
        assert (answer.still_processing, answer.result_code) == (False, 0)
        assert len([path for path, _ in daraja.requests if path == protocol.STK_QUERY_PATH]) == 2  # never retried
    finally:
        await client.close()


@pytest.mark.parametrize("fault", ["garbage", "html", "server_error"])
async def test_a_push_without_a_usable_answer_is_unknown_and_never_sent_twice(
    simulator: tuple[DarajaSimulator, DarajaConfig], fault: str
) -> None:
    daraja, config = simulator
    delays = Delays()
    client = DarajaClient(config, sleep=delays)
    try:
        daraja.fail_next(fault)
        with pytest.raises(DarajaUnavailableError):
            await push(client)
        assert len([path for path, _ in daraja.requests if path == protocol.STK_PUSH_PATH]) == 1
        assert delays.seen == []
    finally:
        await client.close()


@pytest.mark.parametrize("fault", ["garbage", "html", "server_error"])
async def test_a_query_is_retried_with_backoff(simulator: tuple[DarajaSimulator, DarajaConfig], fault: str) -> None:
    daraja, config = simulator
    delays = Delays()
    client = DarajaClient(config, sleep=delays)
    try:
        checkout = await push(client)
        daraja.pushes[checkout].decided_at = 0
        daraja.fail_next(fault)
        answer = await client.stk_query(checkout, now=NOW)
        assert answer.result_code == 0
        assert len(delays.seen) == 1 and 0 <= delays.seen[0] <= 0.25
    finally:
        await client.close()


async def test_a_slow_daraja_times_out(simulator: tuple[DarajaSimulator, DarajaConfig]) -> None:
    daraja, config = simulator
    client = DarajaClient(replace(config, read_timeout=0.3))
    try:
        await client.token()
        daraja.fail_next("slow")
        with pytest.raises(DarajaUnavailableError, match="did not answer"):
            await push(client)
    finally:
        await client.close()


async def test_a_refused_push_names_daraja_s_reason(simulator: tuple[DarajaSimulator, DarajaConfig]) -> None:
    daraja, config = simulator
    client = DarajaClient(config)
    try:
        daraja.fail_next("refuse")
        with pytest.raises(DarajaRefusedError, match="Invalid PartyB") as refused:
            await push(client)
        assert refused.value.status == 400
    finally:
        await client.close()


async def test_nothing_listening_is_unavailable_after_bounded_retries(
    simulator: tuple[DarajaSimulator, DarajaConfig],
) -> None:
    _, config = simulator
    delays = Delays()
    client = DarajaClient(replace(config, base_url="http://127.0.0.1:9"), sleep=delays)
    try:
        with pytest.raises(DarajaUnavailableError, match="cannot connect"):
            await client.token()
        assert len(delays.seen) == config.retries
    finally:
        await client.close()


async def test_an_over_long_account_reference_is_refused_before_sending(
    simulator: tuple[DarajaSimulator, DarajaConfig],
) -> None:
    daraja, config = simulator
    client = DarajaClient(config)
    try:
        with pytest.raises(ValueError, match="12 characters"):
            await client.stk_push(
                amount=1, phone="254712345670", account_reference="SMILINGSTEPS1", callback_url=CALLBACK, now=NOW
            )
        assert daraja.requests == []
    finally:
        await client.close()
