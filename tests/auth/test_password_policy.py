"""Password policy: NIST SP 800-63B length rules, blocklist, personal words, zxcvbn."""

from __future__ import annotations

import random
import string

import pytest

from mlgate.auth.password_policy import (
    MAX_PASSWORD_LENGTH,
    check_password,
    common_passwords,
)
from mlgate.errors import ErrorCode, WeakPassword

USERNAME = "alice"
EMAIL = "bob.smith@example.com"


def check(password: str, *, username: str = USERNAME, email: str | None = EMAIL) -> None:
    check_password(password, username=username, email=email, min_length=12)


def refusal(password: str, *, username: str = USERNAME, email: str | None = EMAIL) -> str:
    with pytest.raises(WeakPassword) as info:
        check(password, username=username, email=email)
    assert info.value.code is ErrorCode.WEAK_PASSWORD
    assert info.value.status == 422
    return info.value.detail


def random_password(length: int, seed: int) -> str:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_.!"
    return "".join(rng.choice(alphabet) for _ in range(length))


def test_blocklist_is_shipped_lowercased_and_large() -> None:
    words = common_passwords()
    assert len(words) >= 10_000
    assert "password" in words
    assert all(word == word.lower() for word in words)
    assert common_passwords() is words  # loaded once


def test_too_short() -> None:
    assert refusal("Xk9#mQ2!vL") == "Password is too short: at least 12 characters"


def test_too_long() -> None:
    assert refusal(random_password(129, seed=1)) == "Password is too long: at most 128 characters"


def test_exactly_max_length_accepted() -> None:
    check(random_password(MAX_PASSWORD_LENGTH, seed=2))


def test_common_password_refused_case_insensitively() -> None:
    assert refusal("qwerty123456") == "Password is too common"
    assert refusal("QWERTY123456") == "Password is too common"
    assert refusal("Password1234") == "Password is too common"


def test_contains_username() -> None:
    assert refusal("zebra-ALICE-meadow-42") == "Password must not contain your username"


def test_short_username_is_not_searched() -> None:
    check("al-zebra-meadow-lantern-42", username="al", email=None)


def test_contains_email_local_part() -> None:
    detail = refusal("zebra-Bob.Smith-meadow-42")
    assert detail == "Password must not contain the name part of your email address"


def test_short_email_local_part_is_not_searched() -> None:
    check("bo-zebra-meadow-lantern-42", username="carol", email="bo@example.com")


def test_low_zxcvbn_score_refused_with_feedback() -> None:
    detail = refusal("aaaaaaaaaaaaaaaa")
    assert detail.startswith("Password is too easy to guess")
    assert len(detail) > len("Password is too easy to guess")  # zxcvbn's advice follows


def test_zxcvbn_uses_personal_words() -> None:
    # The username reversed is not contained literally, but zxcvbn knows it as the user's.
    password = "Rebmulpdckx!7"
    check(password, username="carol", email=None)
    assert refusal(password, username="xkcdplumber", email=None).startswith(
        "Password is too easy to guess"
    )
    assert refusal(password, username="carol", email="xkcdplumber@example.com").startswith(
        "Password is too easy to guess"
    )


def test_zxcvbn_sees_only_first_64_characters() -> None:
    # A weak 64-character head is not rescued by a strong tail.
    password = "a" * 64 + random_password(40, seed=3)
    assert refusal(password).startswith("Password is too easy to guess")


def test_long_random_passphrase_accepted() -> None:
    check("correct horse battery staple")
    check("lantern-orbit-quince-marmalade-97")


def test_non_ascii_passphrase_accepted() -> None:
    check("きょうはとてもいいてんきですね")
    check("Über den Wolken muß die Freiheit grenzenlos sein")


def test_length_counts_code_points_not_bytes() -> None:
    emoji = "😀🐍🚀🌍🎉🔥💡🎸🍕🌈⚡🦄"
    assert len(emoji) == 12
    assert len(emoji.encode()) > 12
    check(emoji)
    check("密码安全测试中文短语长度够")  # 13 CJK characters, 39 bytes
    assert refusal("密码安全测试中文短") == "Password is too short: at least 12 characters"


def test_length_counted_after_nfkc() -> None:
    # "ﬁ" (one code point) normalizes to "fi" (two): 11 typed, 12 counted.
    typed = "ﬁrm-zq7-Lx9"
    assert len(typed) == 11
    check(typed)
    assert refusal("frm-zq7-Lx9") == "Password is too short: at least 12 characters"


def test_invalid_code_points_refused() -> None:
    assert refusal("lantern-orbit-\ud800-quince") == "Password contains invalid characters"
