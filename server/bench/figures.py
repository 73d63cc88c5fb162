"""CLI figures for the bench, in the bench store's environment: chain verification, import,
field encryption, data-key rewrapping and erasure. Prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import time

import server  # noqa: F401 - PICCOLO_CONF
from server.audit.chain import verify_database

IMPORT_SAMPLE = 5_000


async def _verify() -> tuple[float, int]:
    started = time.perf_counter()
    result = await verify_database()
    if not result.ok:
        raise SystemExit(f"bench: the audit chain does not verify: {result.problem}")
    return result.checked / (time.perf_counter() - started), result.checked


async def _import_rate() -> float:
    """Time an import of IMPORT_SAMPLE people inside a transaction that is then rolled back."""
    from faker import Faker

    from server import gateway
    from server.actor import system_actor
    from server.bench.dataset import person_values
    from server.db import write_transaction

    fake_de, fake_en = Faker("de_DE"), Faker("en_GB")
    rows = [person_values(fake_de, fake_en, 10_000_000 + i) for i in range(IMPORT_SAMPLE)]

    class Rollback(Exception):
        pass

    started = time.perf_counter()
    try:
        async with write_transaction():
            for start in range(0, IMPORT_SAMPLE, 1000):
                await gateway.import_people(system_actor("bench"), purpose="customer_service",
                                            rows=rows[start:start + 1000])
            elapsed = time.perf_counter() - started
            raise Rollback
    except Rollback:
        pass
    return IMPORT_SAMPLE / elapsed


def _crypto_rates(n: int = 20_000) -> dict[str, float]:
    """Field encrypt/decrypt and data-key rewrap (unwrap + wrap under the active KEK) per second."""
    import uuid

    from server.kernel import get_kernel
    from server.vault.cipher import decrypt_field, encrypt_field, new_data_key, unwrap_data_key, wrap_data_key

    provider = get_kernel().keys
    subject = uuid.uuid4()
    dk, wrapped = new_data_key(provider, subject)
    started = time.perf_counter()
    tokens = [encrypt_field(dk, "crm_person", "email", subject, f"person{i}@bench.example") for i in range(n)]
    encrypt = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for token in tokens:
        decrypt_field(dk, "crm_person", "email", subject, token)
    decrypt = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(n // 4):
        wrap_data_key(provider, unwrap_data_key(provider, subject, wrapped))
    rewrap = (n // 4) / (time.perf_counter() - started)
    return {"encrypt_per_s": encrypt, "decrypt_per_s": decrypt, "rewrap_per_s": rewrap}


async def _erase_ms(samples: int = 5) -> float:
    """Median time to erase one person (crypto-shredding, ledger entry, SQLite WAL truncation)."""
    import statistics

    from server import gateway
    from server.actor import system_actor
    from server.crm import service as people

    actor = system_actor("bench")
    times = []
    for i in range(samples):
        pid = await gateway.create_person(actor, purpose="customer_service",
                                          values={"family_name": f"Erase{i}", "email": f"erase{i}@bench.example"})
        started = time.perf_counter()
        await people.erase_person(actor, pid)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def _audit_overhead(samples: int = 200) -> float:
    """What the audit adds to a person read on the server: the same reads timed with the audit
    event appended (as always) and with the append switched off in this bench process only."""
    import uuid

    from server import gateway
    from server.actor import Actor
    from server.db import raw
    from server.gateway import audit as gateway_audit

    ids = [r["id"] for r in await raw(f"SELECT id FROM crm_person LIMIT {int(samples)}")]
    actor = Actor(kind="staff", id=str(uuid.uuid4()), face="backoffice", roles=frozenset({"admin"}))

    async def reads() -> float:
        started = time.perf_counter()
        for pid in ids:
            await gateway.get_person(actor, purpose="customer_service", person_id=pid)
        return time.perf_counter() - started

    await reads()  # warm up
    audited = min([await reads() for _ in range(3)])
    real_record = gateway_audit.record_events

    async def no_record(*_: object) -> None:
        return None

    gateway_audit.record_events = no_record  # type: ignore[assignment]
    try:
        bare = min([await reads() for _ in range(3)])
    finally:
        gateway_audit.record_events = real_record
    return audited / bare - 1


async def _signin_timing(rounds: int = 15) -> tuple[float, float]:
    """Median time of a failed customer sign-in for an address with an account (wrong password) and
    for one without: the two must cost the same, or the timing tells whether an account exists.
    Interleaved, so drift hits both alike. The bench process lifts the rate limit (env) for this."""
    import statistics
    import uuid

    from server.actor import system_actor
    from server.errors import SignInFailed
    from server.gateway import create_person
    from server.identity.service import create_customer_account, customer_sign_in

    email = f"timing-{uuid.uuid4().hex[:8]}@bench.example"
    pid = await create_person(system_actor("bench"), purpose="customer_service", values={"email": email})
    await create_customer_account(pid, email, "bench-timing-password")
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for i in range(rounds * 2):
        kind = "known" if i % 2 == 0 else "unknown"
        login = email if kind == "known" else f"nobody-{i}@bench.example"
        started = time.perf_counter()
        try:
            await customer_sign_in(login, "wrong-password-here", f"bench-{i}", uuid.uuid4().hex)
        except SignInFailed:
            pass
        times[kind].append((time.perf_counter() - started) * 1000)
    return statistics.median(times["known"]), statistics.median(times["unknown"])


def main() -> int:
    verify_rate, verified = asyncio.run(_verify())
    import_rate = asyncio.run(_import_rate())
    erase_ms = asyncio.run(_erase_ms())
    audit_overhead = asyncio.run(_audit_overhead())
    known_ms, unknown_ms = asyncio.run(_signin_timing())
    print(json.dumps({"verify_per_s": verify_rate, "verified": verified, "import_per_s": import_rate,
                      "erase_ms": erase_ms, "audit_overhead": audit_overhead, "signin_known_ms": known_ms,
                      "signin_unknown_ms": unknown_ms, **_crypto_rates()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
