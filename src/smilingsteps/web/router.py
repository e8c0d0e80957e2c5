"""Every page, in one router mounted at / (left out of the API document)."""

from __future__ import annotations

from fastapi import APIRouter

from smilingsteps.web import (
    account_pages,
    admin_pages,
    auth_pages,
    booking_pages,
    payment_pages,
    public_pages,
    therapist_pages,
)
from smilingsteps.web.routing import page_router


def build_pages() -> APIRouter:
    router = page_router()
    for part in (
        public_pages,
        auth_pages,
        account_pages,
        booking_pages,
        payment_pages,
        therapist_pages,
        admin_pages,
    ):
        router.include_router(part.build_pages())
    return router
