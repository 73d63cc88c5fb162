"""Blind-index planning: how many bits each search index of a person may keep.

CipherSweet's planner counts every blind index on a row together: a row indexed by email,
phone and name tokens is told apart by the *combination*, so the coincidence count
C = R / 2**(sum of the bits of all indexes on the row) must stay at or above a floor (2 by
default: at least two people share every combination of index values). We also keep each
index on its own at or above the floor for its own population: email and phone are (nearly)
unique per person, but name tokens repeat, so their index is sized by the expected number of
*distinct* tokens, not by the number of people.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_BITS = 32
"""The widest search index value (the first 32 bits of the HMAC)."""
FLOOR = 2.0
"""The smallest coincidence count allowed: R / 2**(bits on the row) ≥ FLOOR."""
TOKENS_PER_PERSON = 2
"""Name tokens indexed for a typical person (given and family name), each on the row."""


@dataclass(frozen=True)
class RowIndex:
    """One blind index on a person's row: its population and how many of its values a row holds."""

    name: str
    distinct: int
    """Expected number of distinct values (people for email and phone, distinct tokens for names)."""
    per_row: int = 1
    """How many values of this index one row carries (name tokens: several)."""


def expected_distinct_tokens(people: int, per_person: int = TOKENS_PER_PERSON) -> int:
    """Distinct name tokens among `people` people, by Heaps' law (T ≈ 10·R^0.6, at most R·tokens).

    Names repeat: 100,000 people have about 10,000 distinct given and family names, not 200,000.
    """
    people = max(people, 1)
    return max(1, min(people * per_person, math.ceil(10 * people ** 0.6)))


def _cap(distinct: int, floor: float) -> int:
    """Bits an index may keep on its own: distinct / 2**bits ≥ floor."""
    if distinct < floor:
        return 0
    return min(MAX_BITS, int(math.floor(math.log2(distinct / floor))))


def row_budget(rows: int, floor: float = FLOOR) -> int:
    """Bits all indexes of one row may keep together: rows / 2**budget ≥ floor."""
    return _cap(rows, floor)


def plan_bits(rows: int, indexes: tuple[RowIndex, ...], floor: float = FLOOR) -> dict[str, int]:
    """Bits per index such that sum(bits × per_row) ≤ row_budget(rows) and each index ≤ its own cap.

    Bits are handed out one at a time, round robin in the given order (the first index gets the
    spare bit), so no index is starved and none is wider than its own population allows.
    """
    budget = row_budget(rows, floor)
    caps = {ix.name: _cap(ix.distinct, floor) for ix in indexes}
    bits = {ix.name: 0 for ix in indexes}
    spent, grew = 0, True
    while grew:
        grew = False
        for ix in indexes:
            if bits[ix.name] < caps[ix.name] and spent + ix.per_row <= budget:
                bits[ix.name] += 1
                spent += ix.per_row
                grew = True
    return bits


def person_indexes(expected_people: int) -> tuple[RowIndex, ...]:
    """The blind indexes of a person's row: email, phone, and the name tokens."""
    people = max(expected_people, 1)
    return (RowIndex("email", people), RowIndex("phone", people),
            RowIndex("name", expected_distinct_tokens(people), per_row=TOKENS_PER_PERSON))


def person_index_bits(expected_people: int, floor: float = FLOOR) -> dict[str, int]:
    """The width of each search index of people, planned together for `expected_people` rows."""
    return plan_bits(expected_people, person_indexes(expected_people), floor)


def coincidences(rows: int, bits: dict[str, int], indexes: tuple[RowIndex, ...]) -> float:
    """Expected rows sharing one combination of index values: R / 2**(sum of bits on the row)."""
    per_row = {ix.name: ix.per_row for ix in indexes}
    return rows / 2 ** sum(b * per_row[name] for name, b in bits.items())
