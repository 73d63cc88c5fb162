"""Blind indexes: keyed HMAC-SHA256 of a normalised value, for exact-match lookup.

Two kinds:
- *exact* (full 128 bits): sign-in lookup, where the value must identify one account;
- *search* (truncated): email, phone and name tokens of people. Truncated so that, at the
  expected number of rows, every combination of a row's index values is shared by several
  people (CipherSweet's planner, `server.vault.planner`): the indexes alone cannot tell two
  people apart, and candidates are confirmed by decryption.
Every value starts with the id of the key that made it, so a rebuilt index never mixes keys,
and a search value then names its width (`key:bits:hex`): a value written under another
`MUTUAL_EXPECTED_PEOPLE` stays findable until `mutual index rebuild` re-plans it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import unicodedata

import phonenumbers

from server.vault.keys import KeyProvider
from server.vault.planner import MAX_BITS

# German transliteration first, so "Müller" and "Mueller" meet; then accents are dropped.
_TRANSLITERATE = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o"})
_TOKEN_SPLIT = re.compile(r"[^\w]+")
LEGACY_MIN_BITS = 8


def normalise_phone(value: str, region: str) -> str:
    """E.164 when the number parses (+4930123456); else its digits, so lookups still agree."""
    try:
        number = phonenumbers.parse(value, region)
        if phonenumbers.is_possible_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        pass
    return re.sub(r"\D", "", value)


def normalise_name_token(token: str) -> str:
    text = unicodedata.normalize("NFKC", token).casefold().translate(_TRANSLITERATE)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def name_tokens(*names: str | None) -> set[str]:
    """The searchable tokens of a person's names: normalised, two characters or more."""
    tokens: set[str] = set()
    for name in names:
        for part in _TOKEN_SPLIT.split(normalise_name_token(name or "")):
            if len(part) >= 2:
                tokens.add(part)
    return tokens


def index_bits(expected_rows: int) -> int:
    """The width the old, per-index rule gave (expected_rows / 2**bits ≥ 4, 8 to 32 bits), kept
    only to find values written before widths were stored; new values follow the planner."""
    return max(LEGACY_MIN_BITS, min(MAX_BITS, int(math.floor(math.log2(max(expected_rows, 1) / 4)))
                                    if expected_rows >= 4 else LEGACY_MIN_BITS))


def _hmac(key: bytes, normalised: str) -> bytes:
    return hmac.new(key, normalised.encode(), hashlib.sha256).digest()


def blind_index(provider: KeyProvider, name: str, normalised: str) -> str:
    """Exact index (128 bits), for lookups that must identify one row."""
    key_id, key = provider.purpose_key(name, "blind-index")
    return f"{key_id}:{_hmac(key, normalised).hex()[:32]}"


def _hex(digest: bytes, bits: int) -> str:
    value = int.from_bytes(digest[:4], "big") >> (32 - bits) if bits else 0
    return f"{value:0{max(1, (bits + 3) // 4)}x}"


def _truncated(key_id: str, key: bytes, normalised: str, bits: int) -> str:
    if not 0 <= bits <= MAX_BITS:
        raise ValueError(f"a search index keeps 0 to {MAX_BITS} bits, not {bits}")
    return f"{key_id}:{bits}:{_hex(_hmac(key, normalised), bits)}"


def search_index(provider: KeyProvider, name: str, normalised: str, bits: int) -> str:
    """Truncated index under the field's active key, naming its width: what is stored."""
    key_id, key = provider.purpose_key(name, "blind-index")
    return _truncated(key_id, key, normalised, bits)


def search_indexes(provider: KeyProvider, name: str, normalised: str) -> list[str]:
    """Index values under every key version of the field and at every width: what a lookup asks for.

    Every key version, so search keeps working while `mutual keys rotate-index` rebuilds the index;
    every width, because each stored value names its own, so a value written before
    `MUTUAL_EXPECTED_PEOPLE` changed is still found (a value of one width never equals a lookup
    of another). Values from before widths were stored (`key:hex`) are asked for too.
    """
    out: list[str] = []
    for key_id, key in provider.purpose_key_versions(name, "blind-index"):
        digest = _hmac(key, normalised)
        out.extend(f"{key_id}:{bits}:{_hex(digest, bits)}" for bits in range(MAX_BITS + 1))
        out.extend(dict.fromkeys(f"{key_id}:{_hex(digest, bits)}" for bits in range(LEGACY_MIN_BITS, MAX_BITS + 1)))
    return out


def stored_width(value: str) -> int | None:
    """The width a stored search index value names, or None for a value from before widths were stored."""
    parts = value.split(":")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
