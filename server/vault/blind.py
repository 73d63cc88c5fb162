"""Blind indexes: keyed HMAC-SHA256 of a normalised value, for exact-match lookup.

Two kinds:
- *exact* (full 128 bits): sign-in lookup, where the value must identify one account;
- *search* (truncated): email, phone and name tokens of people. Truncated so that, at the
  expected number of rows, each index value matches several people (CipherSweet's rule):
  the index alone cannot tell two people apart, and candidates are confirmed by decryption.
Every value starts with the id of the key that made it, so a rebuilt index never mixes keys.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import unicodedata
from collections.abc import Iterable

import phonenumbers

from server.vault.keys import KeyProvider

# German transliteration first, so "Müller" and "Mueller" meet; then accents are dropped.
_TRANSLITERATE = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o"})
_TOKEN_SPLIT = re.compile(r"[^\w]+")
MIN_BITS, MAX_BITS = 8, 32


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
    """Bits kept so that expected_rows / 2**bits ≥ 4: every value is shared at full size."""
    return max(MIN_BITS, min(MAX_BITS, int(math.floor(math.log2(max(expected_rows, 1) / 4))) if expected_rows >= 4
                             else MIN_BITS))


def _hmac(key: bytes, normalised: str) -> bytes:
    return hmac.new(key, normalised.encode(), hashlib.sha256).digest()


def blind_index(provider: KeyProvider, name: str, normalised: str) -> str:
    """Exact index (128 bits), for lookups that must identify one row."""
    key_id, key = provider.purpose_key(name, "blind-index")
    return f"{key_id}:{_hmac(key, normalised).hex()[:32]}"


def _truncated(key_id: str, key: bytes, normalised: str, bits: int) -> str:
    value = int.from_bytes(_hmac(key, normalised)[:4], "big") >> (32 - bits)
    return f"{key_id}:{value:0{(bits + 3) // 4}x}"


def search_index(provider: KeyProvider, name: str, normalised: str, bits: int) -> str:
    """Truncated index under the field's active key: what is stored."""
    key_id, key = provider.purpose_key(name, "blind-index")
    return _truncated(key_id, key, normalised, bits)


def search_indexes(provider: KeyProvider, name: str, normalised: str, bits: int) -> list[str]:
    """Index values under every key version of the field: what a lookup asks for, so search
    keeps working while `mutual keys rotate-index` rebuilds the index in batches."""
    versions = provider.purpose_key_versions(name, "blind-index")
    return [_truncated(key_id, key, normalised, bits) for key_id, key in versions]


def token_indexes(provider: KeyProvider, tokens: Iterable[str], bits: int) -> set[str]:
    return {search_index(provider, "name", token, bits) for token in tokens}
