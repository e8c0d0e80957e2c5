"""The M-Pesa gateway a process uses: its Daraja client and, in the embedded default, the simulator.

The app installs one as its payments part; the periodic jobs (in the app in development, or
in `smilingsteps worker`) use the same one when this process has it (`shared`), so a
payment pushed to the embedded simulator is reconciled against that same simulator.
With MPESA_ENV=simulator and no MPESA_BASE_URL the simulator starts on first use, on a
free loopback port; a separate worker needs a simulator of its own to reach, so run
`smilingsteps mpesa-simulator` and point MPESA_BASE_URL at it for such a set-up.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from smilingsteps.bookings import service as bookings
from smilingsteps.config import Settings
from smilingsteps.payments import service
from smilingsteps.payments.mpesa import protocol, simulator
from smilingsteps.payments.mpesa.client import DarajaClient, DarajaConfig
from smilingsteps.platform.runtime import Runtime

_shared: dict[int, tuple[Settings, MpesaGateway]] = {}


class MpesaGateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.simulator: simulator.DarajaSimulator | None = None
        self.simulator_url: str | None = None
        self._client: DarajaClient | None = None
        self._lock = asyncio.Lock()
        self._stack = AsyncExitStack()

    async def start(self, runtime: Runtime) -> None:
        """Nothing connects at start: Daraja is reached on the first payment."""

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self._stack.aclose()
        self.simulator = None
        if _shared.get(id(self.settings), (None, None))[1] is self:
            del _shared[id(self.settings)]

    async def client(self) -> DarajaClient:
        """The Daraja client, built (and the embedded simulator started) on first use."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = DarajaClient(await self._config())
            return self._client

    async def _config(self) -> DarajaConfig:
        settings = self.settings
        secret = settings.MPESA_CONSUMER_SECRET
        passkey = settings.MPESA_PASSKEY
        if settings.MPESA_ENV == "simulator":
            key = settings.MPESA_CONSUMER_KEY.get_secret_value() if settings.MPESA_CONSUMER_KEY else None
            credentials = (
                key or simulator.DEFAULT_KEY,
                secret.get_secret_value() if secret else simulator.DEFAULT_SECRET,
                settings.MPESA_SHORTCODE or simulator.DEFAULT_SHORTCODE,
                passkey.get_secret_value() if passkey else simulator.DEFAULT_PASSKEY,
            )
        else:
            credentials = (
                settings.MPESA_CONSUMER_KEY.get_secret_value() if settings.MPESA_CONSUMER_KEY else "",
                secret.get_secret_value() if secret else "",
                settings.MPESA_SHORTCODE or "",
                passkey.get_secret_value() if passkey else "",
            )
        base_url = settings.MPESA_BASE_URL
        if base_url is None and settings.mpesa_embedded_simulator:
            base_url = await self._start_simulator(*credentials)
        elif base_url is None:
            base_url = protocol.BASE_URLS[settings.MPESA_ENV]
        return DarajaConfig(
            base_url=base_url,
            consumer_key=credentials[0],
            consumer_secret=credentials[1],
            shortcode=credentials[2],
            passkey=credentials[3],
            transaction_type=settings.MPESA_TRANSACTION_TYPE,
            party_b=settings.MPESA_PARTY_B,
            connect_timeout=settings.MPESA_CONNECT_TIMEOUT,
            read_timeout=settings.MPESA_READ_TIMEOUT,
        )

    async def _start_simulator(self, key: str, secret: str, shortcode: str, passkey: str) -> str:
        self.simulator = simulator.DarajaSimulator(
            consumer_key=key,
            consumer_secret=secret,
            shortcode=shortcode,
            passkey=passkey,
            delay=self.settings.MPESA_SIMULATOR_DELAY,
        )
        self.simulator_url = await self._stack.enter_async_context(simulator.serving(self.simulator))
        return self.simulator_url


def install(runtime: Runtime) -> MpesaGateway:
    """The app's gateway; also where payments starts hearing of booking cancellations."""
    gateway = MpesaGateway(runtime.settings)
    runtime.add_part(gateway)
    _shared[id(runtime.settings)] = (runtime.settings, gateway)
    bookings.on_cancellation(service.refund_on_cancellation)
    return gateway


def gateway_of(runtime: Runtime) -> MpesaGateway:
    return runtime.part(MpesaGateway)


def installed(settings: Settings) -> bool:
    """Whether an app in this process runs a gateway for `settings` (its jobs then share it)."""
    found = _shared.get(id(settings))
    return found is not None and found[0] is settings


def shared(settings: Settings) -> MpesaGateway:
    """This process's gateway for `settings`: the app's when it runs one, else a new one (the worker's)."""
    found = _shared.get(id(settings))
    if found is not None and found[0] is settings:
        return found[1]
    gateway = MpesaGateway(settings)
    _shared[id(settings)] = (settings, gateway)
    return gateway
