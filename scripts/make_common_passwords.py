"""Rebuild `src/mlgate/auth/data/common-passwords.txt` from the installed zxcvbn package.

The list is zxcvbn's "passwords" frequency list (about 30,000 entries, most common
first), lowercased, deduplicated, one per line. zxcvbn is MIT-licensed; its notice
ships beside the data as `common-passwords.LICENSE.txt`.

Usage: .venv/bin/python scripts/make_common_passwords.py [OUTPUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from zxcvbn.frequency_lists import FREQUENCY_LISTS

DEFAULT_OUTPUT = (
    Path(__file__).resolve().parent.parent / "src/mlgate/auth/data/common-passwords.txt"
)
MIN_ENTRIES = 10_000


def common_passwords() -> list[str]:
    raw = FREQUENCY_LISTS["passwords"]
    # Older zxcvbn releases store each list as one comma-separated string.
    entries = raw.split(",") if isinstance(raw, str) else list(raw)
    seen: set[str] = set()
    out: list[str] = []
    for entry in entries:
        word = entry.strip().lower()
        if word and "\n" not in word and word not in seen:
            seen.add(word)
            out.append(word)
    return out


def main(argv: list[str]) -> int:
    output = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    words = common_passwords()
    if len(words) < MIN_ENTRIES:
        sys.stderr.write(f"only {len(words)} entries found; expected at least {MIN_ENTRIES}\n")
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(words) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {len(words)} passwords to {output}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
