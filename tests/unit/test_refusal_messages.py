"""The refusals marked for translation (web/messages.py) are the sentences the services say."""

from __future__ import annotations

from smilingsteps.accounts.errors import WeakPasswordError
from smilingsteps.accounts.passwords import MAX_LENGTH, MIN_LENGTH, password_problem
from smilingsteps.web.messages import REFUSALS


def test_every_password_policy_sentence_is_marked_for_translation() -> None:
    samples = ("a" * (MIN_LENGTH - 1), "ab" * MAX_LENGTH, "abababababababab", "password1234", "wanjiru lantern 42")
    for sample in samples:
        problem = password_problem(sample, personal=("wanjiru",))
        assert problem is not None, sample
        assert WeakPasswordError(problem).detail in REFUSALS
