"""Two processes appending to the audit chain at once never fork it or skip a number."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

from server.audit.chain import verify_database
from server.db import raw

REPO_ROOT = Path(__file__).resolve().parents[2]
PER_PROCESS = 100

CHILD = textwrap.dedent(
    """
    import server  # sets PICCOLO_CONF before Piccolo looks for its engine
    import asyncio
    import sys

    from server.actor import Actor
    from server.audit.chain import Entry, append


    async def main(worker: str, count: int) -> None:
        actor = Actor(kind="system", id=worker, face="cli")
        for _ in range(count):
            await append(actor, Entry(action="read", entity="x", purpose="p"), "v")


    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"MUTUAL_KEYS", "PYTEST_CURRENT_TEST"}}
    for name in ("MUTUAL_DATABASE_URL", "MUTUAL_KEY_FILE", "MUTUAL_VAR_DIR"):
        env[name] = os.environ[name]
    env["PICCOLO_CONF"] = "server.piccolo_conf"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


async def test_two_processes_appending_concurrently_keep_one_unbroken_chain(db: None) -> None:
    env = _child_env()
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, f"worker-{n}", str(PER_PROCESS),
            cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for n in (1, 2)
    ]
    try:
        outputs = await asyncio.wait_for(
            asyncio.gather(*(w.communicate() for w in workers)), timeout=120
        )
    finally:
        for w in workers:
            if w.returncode is None:
                w.kill()
                await w.wait()
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err.decode(errors="replace")[-3000:]

    result = await verify_database()
    assert result.ok, result.problem
    assert result.checked == 2 * PER_PROCESS
    rows = await raw("SELECT seq, actor_id FROM audit_event")
    assert sorted(int(r["seq"]) for r in rows) == list(range(1, 2 * PER_PROCESS + 1))
    per_worker = {w: sum(1 for r in rows if r["actor_id"] == w) for w in ("worker-1", "worker-2")}
    assert per_worker == {"worker-1": PER_PROCESS, "worker-2": PER_PROCESS}
