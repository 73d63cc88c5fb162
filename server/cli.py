"""The `mutual` command: migrate, seed, run both faces, verify the audit chain, make keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import server  # noqa: F401 - sets PICCOLO_CONF before Piccolo is imported
from server import backup_cli
from server.gateway import index_cli
from server.identity import cli as identity_cli
from server.kernel import require_kernel
from server.policy import cli as policy_cli
from server.settings import get_settings
from server.vault import keys_cli

PORTAL_PORT = 8000
BACKOFFICE_PORT = 8001


def _dev_keys() -> None:
    from server.vault import ensure_dev_key_file

    settings = get_settings()
    if settings.dev_mode:
        ensure_dev_key_file(settings.key_file)
        from server.audit.checkpoints import ensure_dev_signing_key

        ensure_dev_signing_key(settings.audit_signing_key_file)


async def _migrate_and_seed(seed: bool) -> bool:
    from server.seed import seed_demo
    from server.setup import migrate

    await migrate()
    return await seed_demo() if seed else False


def cmd_migrate(args: argparse.Namespace) -> int:
    _dev_keys()
    require_kernel()
    asyncio.run(_migrate_and_seed(seed=False))
    print("mutual: database is up to date")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    _dev_keys()
    require_kernel()
    created = asyncio.run(_migrate_and_seed(seed=True))
    print("mutual: demo data seeded" if created else "mutual: database already has data; nothing seeded")
    return 0


def _print_welcome(portal: str, backoffice: str) -> None:
    from server.seed import demo_logins

    print("\nMutual is running (Ctrl-C stops both faces):")
    print(f"  Portal (customers):   {portal}")
    print(f"  Backoffice (staff):   {backoffice}")
    settings = get_settings()
    if settings.dev_mode:
        print("\nDemo sign-in details:")
        for login in demo_logins():
            print(f"  {login.face:<11} {login.login:<32} password: {login.password}")
    else:
        print("\nNo demo data outside development mode: "
              "`mutual staff create NAME --role admin` makes a first account.")
    print("\nStaff set up an authenticator app (TOTP) at their first sign-in.")
    if not settings.smtp_host:
        print(f"Mail (sign-in links, address checks) goes to {settings.mail_outbox}: `mutual outbox` shows it.")
    print(flush=True)


def serve_command(app: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", f"{app}.app:create_app", "--factory", "--host", host,
            "--port", str(port), "--no-server-header", "--log-level", "warning"]


def cmd_run(args: argparse.Namespace) -> int:
    from server.mail import MailNotConfigured, check_mail_settings

    try:
        check_mail_settings(get_settings())
    except MailNotConfigured as exc:
        print(f"mutual: {exc}", file=sys.stderr)
        return 2
    _dev_keys()
    require_kernel()
    # Demo accounts have published passwords: only development mode (`make run`) seeds them.
    asyncio.run(_migrate_and_seed(seed=get_settings().dev_mode and not args.no_seed))
    procs = [
        subprocess.Popen(serve_command("portal", args.host, args.portal_port)),
        subprocess.Popen(serve_command("backoffice", args.host, args.backoffice_port)),
    ]
    _print_welcome(f"http://{args.host}:{args.portal_port}/", f"http://{args.host}:{args.backoffice_port}/")

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    print("\nmutual: both faces stopped")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """The live database, or with --file an exported JSON Lines file, offline. Exit 0 intact, 1 broken,
    3 unanchored (consistent, but no pinned key proves who signed it)."""
    from server.audit.signing import pin, pinned_keys

    try:
        given = [pin(value) for value in (args.public_key or [])]
    except ValueError as exc:
        print(f"mutual: {exc}", file=sys.stderr)
        return 2
    if args.file:
        from server.audit.export_verify import verify_export

        result = verify_export(Path(args.file), set(given) if given else pinned_keys())
        where = f"audit export {args.file}"
    else:
        require_kernel()
        from server.audit.chain import verify_database

        result = asyncio.run(verify_database())
        where = "audit chain"
    if not result.ok:
        at = f" at event {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        print(f"{where} BROKEN{at}: {result.problem}", file=sys.stderr)
        return 1
    pending = int(getattr(result, "pending", 0))  # the live chain reports events it had to sequence first
    counts = (f"{result.checked} events verified, {result.checkpoints} signed checkpoints"
              + (f", {pending} recorded events sequenced first" if pending else "")
              + (f", {result.omitted} left out by the filter proved by their digests" if result.omitted else "")
              + (f", witnessed heads at {', '.join(map(str, result.witnessed))} matched" if result.witnessed else ""))
    if result.unanchored:
        print(f"{where} UNANCHORED: {counts}; {result.unanchored}")
        return 3
    print(f"{where} intact: {counts}")
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    """Sign the chain's current head and publish it to the witnesses."""
    require_kernel()
    from server.audit.anchor import publish
    from server.audit.checkpoints import checkpoint_now

    cp = asyncio.run(checkpoint_now())
    if cp is None:
        print("audit chain is empty; nothing to sign")
        return 0
    sent = publish(cp)
    print(f"audit checkpoint at event {cp['seq']} signed by key {cp['key_id']}"
          + (f"; published to {', '.join(sent)}" if sent else ""))
    return 0


def cmd_audit_public_key(args: argparse.Namespace) -> int:
    """Print the signing key's public half: the value to pin in MUTUAL_AUDIT_PUBLIC_KEY and give auditors."""
    import base64

    from server.audit.signing import load_signing_key, public_raw, signing_key_path

    key = load_signing_key()
    if key is None:
        print(f"mutual: no audit signing key at {signing_key_path()}; set MUTUAL_AUDIT_SIGNING_KEY", file=sys.stderr)
        return 1
    print(base64.b64encode(public_raw(key)).decode())
    return 0


def cmd_audit_prune(args: argparse.Namespace) -> int:
    """Delete events older than --before (default: now minus the retention period) from a signed checkpoint."""
    import datetime as dt

    require_kernel()
    from server.audit.checkpoints import prune

    if args.before:
        try:
            before = dt.datetime.fromisoformat(args.before)
        except ValueError:
            print(f"mutual: --before {args.before!r} is not a date; use YYYY-MM-DD, e.g. 2020-01-31", file=sys.stderr)
            return 2
        before = before if before.tzinfo else before.replace(tzinfo=dt.UTC)
    else:
        before = dt.datetime.now(dt.UTC) - dt.timedelta(days=get_settings().audit_retention_days)
    try:
        result = asyncio.run(prune(before))
    except RuntimeError as exc:
        print(f"mutual: {exc}", file=sys.stderr)
        return 1
    if result.anchor_seq is None:
        print(f"no audit events before {before.isoformat()}; nothing pruned")
    else:
        print(f"pruned {result.events} audit events and {result.subjects} subject links before "
              f"{before.isoformat()}; the chain now starts after the signed checkpoint at event {result.anchor_seq}")
    return 0


async def _rotate_index(field: str, batch: int) -> tuple[int, str, list[str]]:
    from server.actor import system_actor
    from server.audit.chain import Entry, append
    from server.bench.progress import Progress
    from server.db import raw
    from server.gateway.indexing import rebuild_index
    from server.kernel import get_kernel
    from server.vault.keys import (
        FOLLOW_INTERVAL,
        add_index_key,
        locked_key_file,
        read_key_document,
        remove_index_keys,
        write_key_document,
    )

    path = get_settings().key_file
    with locked_key_file(path):
        doc = read_key_document(path)
        if len(doc["index"][field]["keys"]) == 1:  # else a rebuild was interrupted: resume it
            doc, _ = add_index_key(doc, field)
            write_key_document(path, doc)
        active = doc["index"][field]["active"]
    column = "given_name" if field == "name" else field
    total = (await raw(f"SELECT COUNT(*) AS n FROM crm_person WHERE {column} IS NOT NULL"))[0]["n"]
    bar = Progress(f"index {field}", int(total))
    done = await rebuild_index(field, batch=batch, progress=bar.advance)
    bar.close()
    with locked_key_file(path):
        doc, removed = remove_index_keys(read_key_document(path), field, active)
        write_key_document(path, doc)
    # Running apps notice the key file within FOLLOW_INTERVAL; then re-index what they wrote
    # under the old key meanwhile.
    await asyncio.sleep(2 * FOLLOW_INTERVAL)
    done += await rebuild_index(field, batch=batch)
    await append(system_actor("keys"), Entry(action="rotate_index", entity=f"index:{field}",
                                             purpose="compliance_audit"), get_kernel().policies.version)
    return done, active, removed


def _audited(action: str, command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a key command; when it succeeds, append an audit event naming it (never key material)."""

    def run(args: argparse.Namespace) -> int:
        code = command(args)
        if code == 0:
            from server.actor import system_actor
            from server.audit.chain import Entry, append

            detail = {"key_id": args.key_id} if getattr(args, "key_id", None) else {}
            asyncio.run(append(system_actor("keys"), Entry(action=action, entity="keys", purpose="compliance_audit",
                                                            fields=detail), require_kernel().policies.version))
        return code

    return run


def cmd_keys_status(args: argparse.Namespace) -> int:
    """Key-encryption keys (from the vault) and the search-index keys each stored value names."""
    code = keys_cli.cmd_status(args)
    from server.gateway.indexing import index_key_usage

    usage = asyncio.run(index_key_usage())
    print(f"{'search index key':<20} {'active':<7} {'values':>10}")
    provider = require_kernel().keys
    for field, counts in usage.items():
        active = provider.index_key(field)[0]
        for key_id in sorted(set(counts) | {active}):
            mark = "*" if key_id == active else ""
            print(f"{key_id:<20} {mark:<7} {counts.get(key_id, 0):>10}")
        if set(counts) - {active}:
            print(f"{field} index rebuild unfinished; run `mutual keys rotate-index {field}`")
    return code


def cmd_keys_rotate_index(args: argparse.Namespace) -> int:
    refused = keys_cli.refuse_inline("rotate an index key")
    if refused is not None:
        return refused
    require_kernel()
    done, active, removed = asyncio.run(_rotate_index(args.field, args.batch))
    print(f"mutual: {args.field} index rebuilt under {active} for {done} people; "
          f"retired {', '.join(removed) or 'no key'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from server.bench.run import Options, run
    from server.setup import DEFAULT_POSTGRES_URL, postgres_answers

    pg_url = os.environ.get("MUTUAL_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    backends = args.backends.split(",") if args.backends else ["sqlite"]
    if not args.backends and asyncio.run(postgres_answers(pg_url)):
        backends.append("postgres")
    people = args.people or (10_000 if args.quick else 100_000)
    events = args.events or (100_000 if args.quick else 1_000_000)
    requests = args.requests or (100 if args.quick else 400)
    settings = get_settings()
    opts = Options(people=people, events=events, requests=requests, backends=backends,
                   out=Path(args.out), cache=Path(args.cache or settings.var_dir / "bench"), postgres_url=pg_url)
    print(run(opts))
    print(f"\nmutual: report saved to {opts.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mutual", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("seed", help="migrate and seed demo data once").set_defaults(func=cmd_seed)
    run = sub.add_parser("run", help="migrate, seed, serve portal and backoffice")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--portal-port", type=int, default=PORTAL_PORT)
    run.add_argument("--backoffice-port", type=int, default=BACKOFFICE_PORT)
    run.add_argument("--no-seed", action="store_true")
    run.set_defaults(func=cmd_run)
    bench = sub.add_parser("bench", help="measure Mutual against the plaintext floor")
    bench.add_argument("--quick", action="store_true", help="10,000 people, 100,000 events, fewer requests")
    bench.add_argument("--people", type=int)
    bench.add_argument("--events", type=int)
    bench.add_argument("--requests", type=int, help="requests per endpoint at c=16 (half at c=1)")
    bench.add_argument("--backends", help="sqlite,postgres (default: sqlite, plus postgres when reachable)")
    bench.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "bench/results/latest.md"))
    bench.add_argument("--cache", help="dataset cache folder (default var/bench)")
    bench.set_defaults(func=cmd_bench)
    audit = sub.add_parser("audit", help="audit chain tools").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser("verify", help="verify the hash chain and its signed checkpoints")
    verify.add_argument("--file", help="verify an exported JSON Lines file offline instead of the database")
    verify.add_argument("--public-key", "--key-id", action="append", dest="public_key",
                        help="for --file: trust only this key (base64 public key, sha256 fingerprint or key id; "
                        "repeatable; default MUTUAL_AUDIT_PUBLIC_KEY)")
    verify.set_defaults(func=cmd_audit_verify)
    audit.add_parser("checkpoint", help="sign the chain's current head and publish it to the witnesses"
                     ).set_defaults(func=cmd_audit_checkpoint)
    audit.add_parser("public-key", help="print the public key to pin in MUTUAL_AUDIT_PUBLIC_KEY"
                     ).set_defaults(func=cmd_audit_public_key)
    prune = audit.add_parser("prune", help="delete old events after signing a checkpoint the rest starts from")
    prune.add_argument("--before", help="ISO date or time (default: now minus MUTUAL_AUDIT_RETENTION_DAYS)")
    prune.set_defaults(func=_audited("audit_prune", cmd_audit_prune))
    key_commands = keys_cli.register(sub)
    key_commands.choices["status"].set_defaults(func=cmd_keys_status)
    for name in ("rotate", "retire"):  # key management is an admin action: recorded in the audit
        command = key_commands.choices[name]
        command.set_defaults(func=_audited(f"keys_{name}", command.get_default("func")))
    reindex = key_commands.add_parser("rotate-index", help="give a search index a new key and rebuild it "
                                      "in batches while the apps serve (resumes an unfinished run)")
    reindex.add_argument("field", choices=["email", "phone", "name"])
    reindex.add_argument("--batch", type=int, default=500)
    reindex.set_defaults(func=cmd_keys_rotate_index)
    backup_cli.register(sub)
    index_cli.register(sub)
    policy_cli.register(sub)
    identity_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
