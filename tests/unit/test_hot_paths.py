"""The cheap hot paths: the memo of PolicySet.decide, the AES-GCM objects reused per data key and per
key-encryption key, and the bench-only phase timers. Each must change nothing but the cost."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import pytest

from server import timing
from server.policy import PolicySet, load_policies
from server.policy import engine as policy_engine
from server.policy.engine import FieldDecision, FieldSpec, Purpose, Rule
from server.vault.cipher import (
    DecryptionFailed,
    decrypt_field,
    encrypt_field,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from server.vault.keys import FileKeyProvider, new_key_document

POLICIES = Path(__file__).resolve().parents[2] / "policies"
FIELDS = ["given_name", "family_name", "email", "phone", "birth_date"]


def _ask(roles: set[str], purpose: str = "customer_service", relations: frozenset[str] = frozenset(),
         is_self: bool = False) -> dict:
    return {"roles": frozenset(roles), "is_self": is_self, "action": "read", "purpose": purpose,
            "table": "crm_person", "fields": FIELDS, "relations": relations}


QUESTIONS = [_ask({"admin"}), _ask({"sales"}), _ask({"sales"}, relations=frozenset({"assigned"})),
             _ask({"support"}, relations=frozenset({"team"})), _ask({"support"}, purpose="sales"),
             _ask({"customer"}, is_self=True), _ask({"admin"}, purpose="curiosity")]


def test_a_remembered_decision_equals_the_one_computed_afresh() -> None:
    memo, fresh = load_policies(POLICIES), load_policies(POLICIES)
    for question in QUESTIONS:
        first = memo.decide(**question)
        assert memo.decide(**question) == first
        assert first == fresh.decide(**question)  # `fresh` answers each question once: never from a memo
    assert {d.effect for q in QUESTIONS for d in memo.decide(**q).values()} >= {"allow", "mask", "deny"}


def test_a_repeated_question_is_answered_without_evaluating_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_policies(POLICIES)
    policies.decide(**QUESTIONS[0])
    calls: list[str] = []
    real = policies._decide_one
    monkeypatch.setattr(policies, "_decide_one", lambda *a: calls.append(a[5]) or real(*a))
    policies.decide(**QUESTIONS[0])
    assert calls == []
    policies.decide(**{**QUESTIONS[0], "fields": ["email"]})  # another question: evaluated
    assert calls == ["email"]


def test_a_caller_changing_its_decisions_does_not_change_the_next_answer() -> None:
    policies = load_policies(POLICIES)
    decisions = policies.decide(**QUESTIONS[1])
    assert decisions["email"].effect == "deny"
    decisions["email"] = FieldDecision("allow", "reveal-grant by test")
    del decisions["phone"]
    again = policies.decide(**QUESTIONS[1])
    assert again["email"].effect == "deny" and "phone" in again


def _one_rule_policies(effect: str) -> PolicySet:
    spec = FieldSpec("contact.email", "normal", encrypted=True, searchable=True)
    purpose = Purpose("support", "Support", "Support", "contract", False, "Help")
    rule = Rule(id=f"r-{effect}", roles=frozenset({"agent"}), actions=frozenset({"read"}),
                purposes=frozenset({"support"}), tables=frozenset({"t"}), fields=frozenset({"email"}),
                categories=(), effect=effect, scope="all", priority=1)  # type: ignore[arg-type]
    return PolicySet(version=effect, fields={"t": {"email": spec}}, purposes={"support": purpose},
                     roles=["agent"], rules=[rule])


def test_a_reloaded_policy_set_answers_from_its_own_rules_not_the_old_memo() -> None:
    ask = {"roles": frozenset({"agent"}), "is_self": False, "action": "read", "purpose": "support",
           "table": "t", "fields": ["email"]}
    before = _one_rule_policies("allow")
    assert before.decide(**ask)["email"] == FieldDecision("allow", "r-allow")
    after = _one_rule_policies("deny")
    assert after.decide(**ask)["email"] == FieldDecision("deny", "r-deny")
    assert before.decide(**ask)["email"] == FieldDecision("allow", "r-allow")


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_engine, "DECIDE_MEMO_SIZE", 8)
    policies = load_policies(POLICIES)
    for n in range(50):
        decided = policies.decide(**{**QUESTIONS[0], "fields": [f"field_{n}", "email"]})
        assert decided[f"field_{n}"].effect == "deny" and decided["email"].effect == "allow"
    assert 0 < len(policies._decided) <= 8


def _provider() -> FileKeyProvider:
    return FileKeyProvider.from_document(new_key_document(), "test")


def test_a_data_key_reuses_one_aead_object_and_still_round_trips() -> None:
    provider, subject, row = _provider(), uuid.uuid4(), uuid.uuid4()
    dk, wrapped = new_data_key(provider, subject)
    aead = dk.aead
    tokens = [encrypt_field(dk, "crm_person", "email", row, f"erika{i}@example.org") for i in range(3)]
    assert dk.aead is aead and len(set(tokens)) == 3
    again = unwrap_data_key(provider, subject, wrapped)
    assert again == dk and again.aead is not aead  # equal keys; the object is per unwrapped key
    assert [decrypt_field(again, "crm_person", "email", row, t) for t in tokens] == [
        f"erika{i}@example.org" for i in range(3)]
    other = dataclasses.replace(dk, key=os.urandom(32))
    with pytest.raises(DecryptionFailed):
        decrypt_field(other, "crm_person", "email", row, tokens[0])


def test_a_kek_aead_object_is_reused_until_the_key_under_its_id_changes() -> None:
    provider, subject = _provider(), uuid.uuid4()
    kek_id = provider.active_kek_id
    first = provider.kek_aead(kek_id)
    dk, wrapped = new_data_key(provider, subject)
    assert provider.kek_aead(kek_id) is first
    assert wrap_data_key(provider, dk).kek_id == kek_id
    assert unwrap_data_key(provider, subject, wrapped) == dk
    provider.keks[kek_id] = os.urandom(32)  # another key under the same id (a restored, wrong key file)
    assert provider.kek_aead(kek_id) is not first
    with pytest.raises(DecryptionFailed):
        unwrap_data_key(provider, subject, wrapped)


def test_a_provider_without_cached_aead_objects_still_wraps_and_unwraps() -> None:
    inner = _provider()

    class Remote:  # only the KeyProvider protocol, as a KMS-backed provider would offer it
        active_kek_id = inner.active_kek_id

        def kek(self, key_id: str) -> bytes:
            return inner.kek(key_id)

    subject = uuid.uuid4()
    dk, wrapped = new_data_key(Remote(), subject)  # type: ignore[arg-type]
    assert unwrap_data_key(inner, subject, wrapped) == dk
    assert unwrap_data_key(Remote(), subject, wrap_data_key(inner, dk)) == dk  # type: ignore[arg-type]


def test_phases_outside_a_timed_request_record_nothing() -> None:
    with timing.phase("crypto"):
        pass
    recorder, token = timing.start()
    timing.finish(token)
    with timing.phase("crypto"):
        pass
    assert recorder.totals == {}


def test_phases_add_up_per_name_and_a_nested_phase_counts_to_the_outer_one() -> None:
    recorder, token = timing.start()
    try:
        for _ in range(3):
            with timing.phase("crypto"):
                pass
        with timing.phase("audit"), timing.phase("query"):
            pass
    finally:
        timing.finish(token)
    assert set(recorder.totals) == {"crypto", "audit"}
    assert all(v >= 0 for v in recorder.totals.values())
    header = timing.header_value(recorder, 0.0125)
    assert header.startswith("audit;dur=") and ", crypto;dur=" in header and header.endswith("total;dur=12.500")


def test_the_timing_middleware_adds_a_server_timing_header_only_when_switched_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from litestar import Litestar, get
    from litestar.testing import TestClient

    from server.web import timing as web_timing

    @get("/work", sync_to_thread=False)
    def work() -> str:
        with timing.phase("render"):
            return "done"

    monkeypatch.delenv(timing.ENV_VARIABLE, raising=False)
    assert web_timing.middleware() == []
    with TestClient(Litestar([work], middleware=[web_timing._server_timing])) as client:
        response = client.get("/work")
    assert response.text == "done"
    phases = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    assert list(phases) == ["render", "total"]
    assert 0 <= float(phases["render"]) <= float(phases["total"])


def test_statements_through_the_engine_count_as_the_query_phase(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    import asyncio

    from piccolo.engine.sqlite import SQLiteEngine
    from piccolo.querystring import QueryString

    from server.sqlite_engine import MutualSQLiteEngine
    from server.web import timing as web_timing

    db = MutualSQLiteEngine(path=str(tmp_path / "timed.sqlite3"))
    monkeypatch.setattr(web_timing, "engine", lambda: db)
    web_timing._time_queries()
    web_timing._time_queries()  # once only: not a timer around a timer
    assert isinstance(db, SQLiteEngine) and type(db).__mro__[1] is MutualSQLiteEngine

    async def ask() -> tuple[list, dict[str, float]]:
        recorder, token = timing.start()
        try:
            rows = await db.run_querystring(QueryString("SELECT {} AS one", 1))
            with timing.phase("audit"):  # inside another phase the statement counts to that phase
                await db.run_querystring(QueryString("SELECT 2"))
        finally:
            timing.finish(token)
        return rows, recorder.totals

    rows, totals = asyncio.run(ask())
    assert rows == [{"one": 1}] and set(totals) == {"query", "audit"}
