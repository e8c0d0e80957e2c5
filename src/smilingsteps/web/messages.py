"""What services say when they refuse, marked for translation: pages pass a refusal's detail
through gettext, so each sentence a person may read on a form must be in the catalogue.

The services keep their English (the API answers with it); this list is where the
translators find those sentences. `tests/unit/test_refusal_messages.py` checks the
password policy's sentences against what the policy says today.
"""

from __future__ import annotations

from smilingsteps.web.forms import N_

REFUSALS = (
    # accounts: signing in, tokens, two-step verification
    N_("The email or password is not correct."),
    N_("Too many failed sign-in attempts. Try again later, or reset your password to sign in now."),
    N_("This account is suspended. Contact support if you think this is a mistake."),
    N_("The verification code is not correct or was already used."),
    N_("The sign-in step expired or is invalid; enter your email and password again."),
    N_("This link is invalid, expired or was already used. Request a new one."),
    N_("An account with this email already exists. Sign in or reset your password."),
    N_("The current password is not correct."),
    N_("The password or the verification code is not correct."),
    N_("Two-factor authentication is already on; turn it off first to enrol again."),
    N_("Two-factor authentication is not on."),
    N_("Administrators must keep two-factor authentication on."),
    N_("Administrators cannot change their own account status."),
    # the password policy (WeakPasswordError: "The password " + problem + ".")
    N_("The password must be at least 12 characters long."),
    N_("The password must be at most 128 characters long."),
    N_("The password uses too few different characters."),
    N_("The password is too common; choose a less predictable password (a few unrelated words work well)."),
    N_("The password must not contain your name or email address."),
    # bookings
    N_("Someone else has just booked this time. Choose another slot."),
    N_("You already have a session that overlaps this time."),
    N_("Only client accounts book sessions."),
    N_("No such booking."),
    N_("No such therapist."),
    N_("Record the outcome after the session's end time."),
    N_("Too many requests; wait before trying again."),
)
