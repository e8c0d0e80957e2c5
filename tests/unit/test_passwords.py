"""Password policy and argon2id hashing."""

from __future__ import annotations

import pytest

from smilingsteps.accounts.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    HashParameters,
    PasswordHasher,
    common_passwords,
    password_problem,
)

CHEAP = HashParameters(time_cost=1, memory_kib=64, parallelism=1)


def test_the_shipped_common_password_list_is_loaded() -> None:
    words = common_passwords()
    assert len(words) > 19_000
    assert {"password", "qwerty", "iloveyou"} <= words


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("short1!", "at least 12"),
        ("x" * (MAX_LENGTH + 1), "at most 128"),
        ("aaaaaaaaaaaaaaaa", "too few different"),
        ("password1234", "too common"),
        ("Password2024!!", "too common"),
        ("!!qwertyuiop!!", "too common"),
        ("iloveyouiloveyou", "too common"),
        ("1q2w3e4r5t6y", "too common"),
    ],
)
def test_weak_passwords_are_refused_naming_the_rule(password: str, rule: str) -> None:
    problem = password_problem(password)
    assert problem is not None and rule in problem


def test_a_password_containing_the_users_name_is_refused() -> None:
    problem = password_problem("wanjiru-sunrise-77", personal=("ann.wanjiru", "Ann", "Wanjiru"))
    assert problem is not None and "name or email" in problem


@pytest.mark.parametrize(
    "password", ["tangerine lantern 42", "Kettle-Moss-Ridge-9", "ñandú corre rápido", "x" * 8 + "yzwq"]
)
def test_reasonable_passwords_pass(password: str) -> None:
    assert len(password) >= MIN_LENGTH
    assert password_problem(password) is None


async def test_hash_is_argon2id_and_verifies() -> None:
    hasher = PasswordHasher(CHEAP)
    stored = await hasher.hash("tangerine lantern 42")
    assert stored.startswith("$argon2id$")
    assert await hasher.verify(stored, "tangerine lantern 42") == (True, False)
    assert await hasher.verify(stored, "tangerine lantern 43") == (False, False)


async def test_unknown_account_is_compared_against_a_dummy_hash_and_never_matches() -> None:
    hasher = PasswordHasher(CHEAP)
    assert await hasher.verify(None, "anything at all 1") == (False, False)


async def test_a_hash_made_with_older_parameters_asks_for_a_rehash() -> None:
    old = await PasswordHasher(CHEAP).hash("tangerine lantern 42")
    stronger = PasswordHasher(HashParameters(time_cost=2, memory_kib=128, parallelism=1))
    assert await stronger.verify(old, "tangerine lantern 42") == (True, True)


async def test_a_corrupt_stored_hash_is_a_mismatch_not_an_error() -> None:
    assert await PasswordHasher(CHEAP).verify("not-a-hash", "tangerine lantern 42") == (False, False)
