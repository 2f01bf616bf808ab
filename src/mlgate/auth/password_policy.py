"""Password policy per NIST SP 800-63B: length, a blocklist, the user's own words, strength.

No composition rules: any Unicode is allowed and lengths count code points after NFKC
normalization. `check_password` is CPU-bound (zxcvbn); async callers run it through
`PasswordService.check_policy`, which uses the hashing pool.
"""

from __future__ import annotations

import threading
import unicodedata
from functools import cache
from importlib.resources import files

from zxcvbn import zxcvbn

from mlgate.errors import WeakPassword

MAX_PASSWORD_LENGTH = 128
"""Upper bound in code points after NFKC (NIST asks to allow at least 64)."""

MIN_STRENGTH_SCORE = 3
"""Lowest acceptable zxcvbn score (0-4)."""

STRENGTH_CHECK_CHARS = 64
"""zxcvbn sees at most this many leading characters: its cost grows with length."""

MIN_PERSONAL_WORD_LENGTH = 3
"""Usernames or email local parts shorter than this are not searched for."""

# zxcvbn stores the user inputs in a module-level dictionary for the duration of a call,
# so concurrent calls from the pool would see each other's words.
_zxcvbn_lock = threading.Lock()


@cache
def common_passwords() -> frozenset[str]:
    """The shipped blocklist (lowercased), loaded once."""
    text = files("mlgate.auth").joinpath("data/common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def check_password(password: str, *, username: str, email: str | None, min_length: int) -> None:
    """Raise `WeakPassword` with a reason a person can act on, or return when acceptable."""
    normalized = unicodedata.normalize("NFKC", password)
    length = len(normalized)
    if length < min_length:
        raise WeakPassword(f"Password is too short: at least {min_length} characters")
    if length > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"Password is too long: at most {MAX_PASSWORD_LENGTH} characters")
    try:
        normalized.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (possible through JSON escapes) are not characters.
        raise WeakPassword("Password contains invalid characters") from None

    folded = normalized.casefold()
    if folded in common_passwords():
        raise WeakPassword("Password is too common")

    folded_username = _fold(username)
    if len(folded_username) >= MIN_PERSONAL_WORD_LENGTH and folded_username in folded:
        raise WeakPassword("Password must not contain your username")
    local_part = _fold(email.rpartition("@")[0] or email) if email else ""
    if len(local_part) >= MIN_PERSONAL_WORD_LENGTH and local_part in folded:
        raise WeakPassword("Password must not contain the name part of your email address")

    user_words = [word for word in (folded_username, local_part) if word]

    with _zxcvbn_lock:
        result = zxcvbn(normalized[:STRENGTH_CHECK_CHARS], user_inputs=user_words)
    if int(result["score"]) < MIN_STRENGTH_SCORE:
        raise WeakPassword(_weak_detail(result.get("feedback") or {}))


def _weak_detail(feedback: dict[str, object]) -> str:
    hints: list[str] = []
    warning = feedback.get("warning")
    if isinstance(warning, str) and warning.strip():
        hints.append(warning.strip())
    suggestions = feedback.get("suggestions")
    if isinstance(suggestions, list):
        hints.extend(s.strip() for s in suggestions if isinstance(s, str) and s.strip())
    detail = "Password is too easy to guess"
    if hints:
        detail += ": " + " ".join(h if h.endswith((".", "!", "?")) else h + "." for h in hints)
    return detail
