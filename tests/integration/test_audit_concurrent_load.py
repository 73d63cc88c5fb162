"""Three processes reading and writing through the gateway at once, one killed mid-run, leave one chain:
after a flush it verifies, its seqs are contiguous, nothing stays pending and every survivor's events are
there. The children record in background mode (the sequencer on PostgreSQL, group commit on SQLite)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap

from server import gateway
from server.audit import flush
from server.audit.chain import verify_database
from server.db import raw
from tests.integration.test_audit_concurrency import REPO_ROOT, _child_env
from tests.support import ERIKA, MAX, staff

SECONDS = 3.0
"""How long each survivor runs; the killed one would run for KILLED_SECONDS but is killed once it has
recorded events (so it dies mid-run, whatever the machine's load)."""
KILLED_SECONDS = 60.0
WORKERS_PER_PROCESS = 3

CHILD = textwrap.dedent(
    """
    import server  # sets PICCOLO_CONF before Piccolo looks for its engine
    import asyncio
    import json
    import random
    import sys
    import time
    import uuid

    from server import gateway
    from server.actor import Actor
    from server.audit import leader, record
    from server.audit.chain import Entry
    from server.db import engine, is_sqlite


    async def main(name, seconds, ids):
        if not is_sqlite():
            await engine().start_connection_pool()
        leader.start()
        admin = Actor(kind="staff", id=str(uuid.uuid4()), face="backoffice", roles=frozenset({"admin"}),
                      display=name)
        probe = Actor(kind="system", id=f"probe-{name}", face="cli")
        ops, probes = {}, 0
        print(json.dumps({"ready": admin.id}), flush=True)
        end = time.monotonic() + seconds

        async def work(n):
            nonlocal probes
            rng = random.Random(f"{name}-{n}")
            while time.monotonic() < end:
                op = rng.choice(["get", "list", "find", "create", "update", "note", "probe", "probe"])
                person = uuid.UUID(rng.choice(ids))
                if op == "get":
                    await gateway.get_person(admin, purpose="customer_service", person_id=person)
                elif op == "list":
                    await gateway.list_people(admin, purpose="customer_service")
                elif op == "find":
                    await gateway.find_people(admin, purpose="customer_service", field="email",
                                              query="erika.mustermann@example.org")
                elif op == "create":
                    await gateway.create_person(admin, purpose="customer_service", values={
                        "given_name": "Max", "family_name": "Mustermann",
                        "email": f"max.{uuid.uuid4().hex[:8]}@example.org"})
                elif op == "update":
                    await gateway.update_person(admin, purpose="customer_service", person_id=person,
                                                changes={"phone": f"+49 30 {rng.randint(1000000, 9999999)}"})
                elif op == "note":
                    await gateway.add_note(admin, purpose="customer_service", person_id=person, body="Rückruf")
                else:  # a read recorded after its select, outside any transaction (group commit / pending)
                    await record([(probe, Entry(action="read", entity="load_probe", purpose="customer_service"))],
                                 "load")
                    probes += 1
                ops[op] = ops.get(op, 0) + 1

        await asyncio.gather(*(work(n) for n in range(%(workers)d)))
        await leader.stop()
        print(json.dumps({"probes": probes, "ops": ops}), flush=True)


    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")))
    """
) % {"workers": WORKERS_PER_PROCESS}


async def _count(sql: str, *args: object) -> int:
    return int((await raw(sql, *args))[0]["n"])


async def _until_recorded(*actors: str, events: int = 5, timeout: float = 60) -> None:
    """Wait until these actors have recorded `events` events (chained or pending)."""
    marks = ", ".join("{}" for _ in actors)
    sql = (f"SELECT (SELECT COUNT(*) FROM audit_event WHERE actor_id IN ({marks})) "
           f"+ (SELECT COUNT(*) FROM audit_pending WHERE actor_id IN ({marks})) AS n")
    for _ in range(int(timeout / 0.05)):
        if await _count(sql, *actors, *actors) >= events:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{actors} recorded fewer than {events} events in {timeout} s")


async def test_three_processes_under_load_one_killed_leave_one_verified_contiguous_chain(db: None) -> None:
    admin = staff("admin")
    ids = [str(await gateway.create_person(admin, purpose="customer_service", values=v)) for v in (ERIKA, MAX)]
    env = {**_child_env(), "MUTUAL_AUDIT_SEQUENCER": "background"}
    names = ["killed", "second", "third"]
    children = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, name, str(KILLED_SECONDS if name == "killed" else SECONDS), ",".join(ids),
        cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for name in names]
    try:
        staff_ids = []
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), timeout=90)
            assert line, (await child.communicate())[1].decode(errors="replace")[-3000:]
            staff_ids.append(json.loads(line)["ready"])
        await _until_recorded(staff_ids[0], "probe-killed")
        children[0].send_signal(signal.SIGKILL)
        outputs = await asyncio.wait_for(asyncio.gather(*(c.communicate() for c in children)), timeout=180)
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert children[0].returncode == -signal.SIGKILL
    reports = {}
    for name, child, (out, err) in zip(names[1:], children[1:], outputs[1:], strict=True):
        assert child.returncode == 0, err.decode(errors="replace")[-3000:]
        reports[name] = json.loads(out.decode().strip().splitlines()[-1])

    await flush()
    result = await verify_database()
    assert result.ok, result.problem
    seqs = [int(r["seq"]) for r in await raw("SELECT seq FROM audit_event ORDER BY id")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert await _count("SELECT COUNT(*) AS n FROM audit_pending") == 0
    for name, staff_id in zip(names[1:], staff_ids[1:], strict=True):
        report = reports[name]
        assert report["probes"] > 0 and sum(report["ops"].values()) > report["probes"]
        probes = await _count("SELECT COUNT(*) AS n FROM audit_event WHERE actor_id = {}", f"probe-{name}")
        assert probes == report["probes"]
        gateway_ops = sum(n for op, n in report["ops"].items() if op != "probe")
        assert await _count("SELECT COUNT(*) AS n FROM audit_event WHERE actor_id = {}", staff_id) >= gateway_ops
    killed = await _count("SELECT COUNT(*) AS n FROM audit_event WHERE actor_id IN ({}, 'probe-killed')", staff_ids[0])
    assert killed >= 5
