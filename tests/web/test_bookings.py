"""Finding and booking a therapist in the browser (no JavaScript): the directory's filters, the
profile's slots in the visitor's zone, a hold with its countdown, my sessions, cancelling with
the money stated first, rescheduling, and the therapist's notes and outcome."""

from __future__ import annotations

import re
import uuid

import httpx
from fastapi import FastAPI

from smilingsteps.accounts.models import Role
from tests.support.accounts import PASSWORD, plain_text
from tests.support.bookings import confirm, make_user, therapist_user
from tests.support.clock import FakeClock
from tests.support.pages import csrf_token, fill, open_page, submit, text_of
from tests.support.smtp import SmtpServer
from tests.web.conftest import mail_for

SLOT_FORM = re.compile(r'<form method="post" action="/bookings" data-once>(.*?)</form>', re.S)


async def sign_in_page(browser: httpx.AsyncClient, email: str) -> None:
    signed = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})
    assert signed.status_code == 303, text_of(signed)


async def verified_client(
    app: FastAPI, browser: httpx.AsyncClient, *, full_name: str = "Achieng Odhiambo", **options: str
) -> str:
    user = await make_user(app, role=Role.CLIENT, full_name=full_name, **options)
    await sign_in_page(browser, user.email)
    return user.email


def first_slot(page: httpx.Response) -> dict[str, str]:
    form = SLOT_FORM.search(page.text)
    assert form is not None, "no bookable slot on the page"
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form.group(1)))
    fields.pop("csrf_token")
    return fields


async def hold_first_slot(browser: httpx.AsyncClient, therapist_id: str, zone: str = "Europe/London") -> str:
    profile = await open_page(browser, f"/therapists/{therapist_id}?tz={zone}")
    held = await submit(browser, "/bookings", first_slot(profile), token=csrf_token(profile))
    assert held.status_code == 303, text_of(held)
    location = held.headers["location"]
    assert re.fullmatch(r"/bookings/[0-9a-f-]{36}", location), location
    return location


async def test_the_directory_filters_and_explains_what_it_refuses(browser: httpx.AsyncClient, app: FastAPI) -> None:
    # Only these therapists hold sessions in Amharic: other tests share the database.
    tag = uuid.uuid4().hex[:6]
    amina, brian, pending = f"Dr Amina {tag}", f"Dr Brian {tag}", f"Dr Pending {tag}"
    await therapist_user(app, full_name=amina, specialties=("grief",), price_kes=3000, languages=("am",))
    await therapist_user(app, full_name=brian, specialties=("anxiety",), price_kes=1500, languages=("am",))
    await therapist_user(app, full_name=pending, approved=False, languages=("am",))
    everyone = text_of(await open_page(browser, "/therapists?language=am"))
    assert amina in everyone and brian in everyone
    assert pending not in everyone
    grief = text_of(await open_page(browser, "/therapists?specialty=grief&language=am&max_price="))
    assert amina in grief and brian not in grief
    cheap = text_of(await open_page(browser, "/therapists?max_price=2000&language=am"))
    assert brian in cheap and amina not in cheap
    assert "Ksh 1,500 for 50 minutes" in cheap
    odd = await open_page(browser, "/therapists?max_price=lots&specialty=astrology")
    assert odd.status_code == 422
    assert "Enter a whole number." in text_of(odd) and "Choose one of the options." in text_of(odd)


async def test_a_profile_shows_free_times_in_the_visitors_zone(browser: httpx.AsyncClient, app: FastAPI) -> None:
    therapist = await therapist_user(app, full_name="Dr Amina Yusuf")
    nairobi = await open_page(browser, f"/therapists/{therapist.id}")
    assert "<option selected>Africa/Nairobi</option>" in nairobi.text
    assert ">11:00</a>" in nairobi.text or ">12:00</a>" in nairobi.text  # Friday 08:00 UTC is 11:00 in Nairobi
    london = await open_page(browser, f"/therapists/{therapist.id}?tz=Europe/London")
    assert "<option selected>Europe/London</option>" in london.text
    assert ">06:00</a>" in london.text  # 09:00 in Nairobi on Monday is 06:00 in London in January
    assert "Sign in to book" in london.text
    remembered = await open_page(browser, f"/therapists/{therapist.id}")
    assert "<option selected>Europe/London</option>" in remembered.text
    missing = await open_page(browser, "/therapists/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and "Page not found" in text_of(missing)
    assert (await open_page(browser, "/therapists/not-an-id")).status_code == 404


async def test_a_client_holds_a_slot_sees_the_countdown_and_finds_it_in_my_sessions(
    browser: httpx.AsyncClient, app: FastAPI
) -> None:
    therapist = await therapist_user(app, full_name="Dr Amina Yusuf", price_kes=2500)
    await verified_client(app, browser)
    profile = await open_page(browser, f"/therapists/{therapist.id}?tz=Europe/London")
    slot = first_slot(profile)
    assert slot["timezone"] == "Europe/London"
    held = await submit(browser, "/bookings", slot, token=csrf_token(profile))
    location = held.headers["location"]
    page = await open_page(browser, location)
    said = text_of(page)
    assert "Session with Dr Amina Yusuf" in said
    assert "Held for you: waiting for payment" in said and "Ksh 2,500" in said
    assert "(Europe/London)" in said
    assert 'data-countdown="' in page.text and "10 min" in said  # BOOKING_HOLD_MINUTES
    again = await submit(browser, "/bookings", slot, token=csrf_token(profile))  # a double click
    assert again.headers["location"] == location
    mine = text_of(await open_page(browser, "/bookings"))
    assert mine.count("Dr Amina Yusuf") == 1 and "Upcoming" in mine


async def test_a_client_who_has_not_confirmed_their_email_is_asked_to_first(
    browser: httpx.AsyncClient, app: FastAPI
) -> None:
    therapist = await therapist_user(app)
    user = await make_user(app, role=Role.CLIENT, verified=False)
    await sign_in_page(browser, user.email)
    profile = await open_page(browser, f"/therapists/{therapist.id}")
    answer = await submit(browser, "/bookings", first_slot(profile), token=csrf_token(profile))
    assert answer.headers["location"] == "/account?notice=verify-first"


async def test_someone_elses_booking_is_not_found_and_says_nothing(browser: httpx.AsyncClient, app: FastAPI) -> None:
    therapist = await therapist_user(app)
    await verified_client(app, browser)
    location = await hold_first_slot(browser, str(therapist.id))
    async with httpx.AsyncClient(transport=browser._transport, base_url=str(browser.base_url)) as stranger:
        await verified_client(app, stranger)
        for path in (location, f"{location}/cancel", f"{location}/reschedule"):
            page = await open_page(stranger, path)
            assert page.status_code == 404, path
            assert "Dr Wanjiru Kamau" not in page.text
        form = await open_page(stranger, "/bookings")
        cancel = await submit(stranger, f"{location}/cancel", {}, token=csrf_token(form))
        assert cancel.status_code == 404
    assert "Held for you" in text_of(await open_page(browser, location))


async def test_cancelling_states_the_money_first_and_an_unpaid_session_promises_no_refund(
    browser: httpx.AsyncClient, app: FastAPI
) -> None:
    therapist = await therapist_user(app)
    await verified_client(app, browser)
    location = await hold_first_slot(browser, str(therapist.id))
    asked = await open_page(browser, f"{location}/cancel")
    said = text_of(asked)
    assert "Nothing has been paid for this session, so nothing is charged or refunded." in said
    assert "will be refunded" not in said
    done = await submit(browser, f"{location}/cancel", {"reason": "Something came up"}, token=csrf_token(asked))
    assert done.headers["location"] == f"{location}?notice=cancelled"
    page = text_of(await open_page(browser, done.headers["location"]))
    assert "The session has been cancelled." in page and "Cancelled" in page and "Refund" not in page
    twice = await submit(browser, f"{location}/cancel", {}, token=csrf_token(asked))
    assert twice.headers["location"] == f"{location}?notice=cannot-cancel"


async def test_a_confirmed_session_moves_to_another_free_time(browser: httpx.AsyncClient, app: FastAPI) -> None:
    therapist = await therapist_user(app)
    await verified_client(app, browser)
    location = await hold_first_slot(browser, str(therapist.id))
    await confirm(app, location.rsplit("/", 1)[1])
    before = text_of(await open_page(browser, location))
    choices = await open_page(browser, f"{location}/reschedule")
    assert choices.status_code == 200
    forms = re.findall(r'name="starts_at" value="([^"]+)"', choices.text)
    assert len(forms) > 3
    moved = await submit(browser, f"{location}/reschedule", {"starts_at": forms[3]}, token=csrf_token(choices))
    assert moved.headers["location"] == f"{location}?notice=rescheduled"
    after = text_of(await open_page(browser, location))
    assert after != before and "Confirmed" in after


async def test_the_therapist_keeps_private_notes_and_records_the_outcome_after_the_end(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    therapist = await therapist_user(app, full_name="Dr Amina Yusuf")
    await verified_client(app, browser)
    location = await hold_first_slot(browser, str(therapist.id))
    await confirm(app, location.rsplit("/", 1)[1])
    assert "Private notes" not in text_of(await open_page(browser, location))  # the client never sees them
    async with httpx.AsyncClient(transport=browser._transport, base_url=str(browser.base_url)) as practice:
        await sign_in_page(practice, therapist.email)
        page = await open_page(practice, location)
        assert "Session with Achieng Odhiambo" in text_of(page)
        assert "How did it go?" not in text_of(page)  # not before the end
        saved = await submit(
            practice, f"{location}/notes", {"text": "Talked about <sleep> & work."}, token=csrf_token(page)
        )
        assert saved.headers["location"] == f"{location}?notice=note-saved"
        again = await open_page(practice, location)
        assert "Talked about &lt;sleep&gt; &amp; work." in again.text
        early = await submit(practice, f"{location}/outcome", {"outcome": "completed"}, token=csrf_token(again))
        assert early.headers["location"] == f"{location}?notice=cannot-record"
        clock.advance(21 * 86400)
        await sign_in_page(practice, therapist.email)
        later = await open_page(practice, location)
        assert "How did it go?" in text_of(later)
        done = await submit(practice, f"{location}/outcome", {"outcome": "completed"}, token=csrf_token(later))
        assert done.headers["location"] == f"{location}?notice=recorded"
        assert "Completed" in text_of(await open_page(practice, location))


async def test_a_client_who_reads_kiswahili_gets_the_pages_and_the_email_in_kiswahili(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    therapist = await therapist_user(app, full_name="Dr Amina Yusuf")
    email = await verified_client(app, browser)
    await fill(browser, "/", "/language", {"language": "sw", "next": "/"})  # stored on the account
    location = await hold_first_slot(browser, str(therapist.id))
    page = text_of(await open_page(browser, location))
    assert "Kikao na Dr Amina Yusuf" in page and "Ksh 2,500" in page and "Jumatatu" in page
    [message] = await mail_for(app, clock, smtp_server, email)
    assert message["Subject"] == "Kikao chako na Dr Amina Yusuf kimeshikiliwa kwa dakika 10"
    assert "Jumatatu 18 Januari 2027, 06:00 (Europe/London)" in plain_text(message)
