"""Blind-index planning: the bits of all indexes on a person's row are budgeted together."""

from __future__ import annotations

import math

import pytest

from server.vault.blind import _truncated, search_indexes, stored_width
from server.vault.planner import (
    FLOOR,
    RowIndex,
    coincidences,
    expected_distinct_tokens,
    person_index_bits,
    person_indexes,
    plan_bits,
)

SIZES = [1, 3, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10**8, 10**12]


@pytest.mark.parametrize("people", SIZES)
def test_the_combination_of_a_rows_indexes_is_shared_by_at_least_two_people(people: int) -> None:
    bits = person_index_bits(people)
    total = bits["email"] + bits["phone"] + 2 * bits["name"]  # two name tokens on the row
    assert people / 2 ** total >= FLOOR or total == 0
    assert coincidences(people, bits, person_indexes(people)) >= min(FLOOR, people)


@pytest.mark.parametrize("people", [100, 10_000, 100_000, 10**8])
def test_the_budget_is_spent_not_wasted(people: int) -> None:
    bits = person_index_bits(people)
    total = bits["email"] + bits["phone"] + 2 * bits["name"]
    budget = math.floor(math.log2(people / FLOOR))
    assert budget - 2 < total <= budget  # at most the one name-token pair that no longer fits is left over


def test_the_old_per_index_widths_together_identified_every_row() -> None:
    # Before: 14 bits for each of email, phone and two name tokens = 56 bits for 100,000 people.
    assert 100_000 / 2 ** (14 * 4) < 1
    assert sum(person_index_bits(100_000).values()) < 14 * 3


def test_name_tokens_are_sized_by_distinct_tokens_not_by_people() -> None:
    assert expected_distinct_tokens(100_000) == 10_000
    assert expected_distinct_tokens(10) == 20  # few people: every token may be distinct
    # A plentiful row budget: each index is held to its own population.
    bits = plan_bits(10**9, (RowIndex("email", 1_000_000), RowIndex("name", 64, per_row=2)))
    assert bits["name"] == 5  # 64 distinct tokens / 2**5 = 2 per value
    assert bits["email"] == 18  # 1,000,000 / 2**18 ≈ 3.8 per value
    assert 64 / 2 ** bits["name"] >= FLOOR


def test_a_stored_value_names_its_width_and_a_lookup_finds_it_at_any_width() -> None:
    key = b"k" * 32
    for width in (0, 3, 13, 32):
        stored = _truncated("email-1", key, "erika@example.com", width)
        assert stored_width(stored) == width

    class Keys:
        def purpose_key_versions(self, name: str, purpose: str) -> list[tuple[str, bytes]]:
            return [("email-1", key)]

    lookups = search_indexes(Keys(), "email", "erika@example.com")  # type: ignore[arg-type]
    assert {_truncated("email-1", key, "erika@example.com", w) for w in range(33)} <= set(lookups)
    assert _truncated("email-1", key, "max@example.com", 32) not in lookups
