"""The `mutual keys` commands: init, rotate, status, retire key-encryption keys, close a crypto-period."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import server  # noqa: F401 - sets PICCOLO_CONF before Piccolo is imported
from server.cli_groups import Commands, register_group, run_standalone
from server.kernel import require_kernel
from server.settings import get_settings
from server.vault.keys import INLINE_VARIABLE, KeyError_, inline_key_document, new_key_document


def _fail(message: str) -> int:
    print(f"mutual: {message}", file=sys.stderr)
    return 1


def refuse_inline(action: str) -> int | None:
    if os.environ.get(INLINE_VARIABLE):
        return _fail(
            f"cannot {action}: the keys come from {INLINE_VARIABLE}, an inline document this command "
            f"cannot rewrite. Put the document in a key file, point MUTUAL_KEY_FILE at it, unset "
            f"{INLINE_VARIABLE}, restart Mutual, and run the command again."
        )
    return None


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.exists():
        return _fail(f"{path} exists; refusing to overwrite keys (that would make the data unreadable)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(new_key_document(), fh, indent=2)
    print(f"mutual: new keys written to {path} (mode 600). Back it up apart from the database; "
          "set MUTUAL_KEY_FILE to it.")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    refused = refuse_inline("rotate keys")
    if refused is not None:
        return refused
    require_kernel()
    from server.bench.progress import Progress
    from server.vault.rotation import rotate

    path = get_settings().key_file
    bar: Progress | None = None
    shown = 0

    def on_progress(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = Progress("rewrapping data keys", total)
        bar.advance(done - shown)
        shown = done

    try:
        result = asyncio.run(rotate(path, batch=args.batch, progress=on_progress))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        return _fail("rotation interrupted; run `mutual keys rotate` again to finish it "
                     "(it continues where it stopped, without adding another key)")
    except KeyError_ as exc:
        if bar is not None:
            bar.close()
        return _fail(f"rotation stopped: {exc}")
    if bar is not None:
        bar.close()
    if result.added:
        print(f"mutual: added key-encryption key {result.added} to {path}; it is now active. "
              "Back up the key file now.")
    else:
        print(f"mutual: continued the unfinished rotation to {result.active}")
    print(f"mutual: rewrapped {result.rewrapped} data key(s) under {result.active}; "
          f"{result.remaining} remain under older keys")
    print("mutual: older keys may be retired with `mutual keys retire KEY_ID`; the subject-key store then "
          "carries older backups' data keys, so back it up with the key file afterwards")
    return 0 if result.complete else 1


def cmd_status(args: argparse.Namespace) -> int:
    require_kernel()
    from server.vault.rotation import key_status

    path = get_settings().key_file
    status = asyncio.run(key_status(path))
    source = INLINE_VARIABLE if inline_key_document() is not None else str(path)
    print(f"keys: {source}")
    print(f"{'key-encryption key':<20} {'active':<7} {'data keys':>10}")
    for kid, count in status["keks"].items():
        mark = "*" if kid == status["active"] else ""
        note = "  MISSING from the key file" if kid in status["unknown"] else ""
        print(f"{kid:<20} {mark:<7} {count:>10}{note}")
    print(f"{'total':<20} {'':<7} {status['data_keys']:>10}")
    pending = status["data_keys"] - status["keks"].get(status["active"], 0)
    if status["unknown"]:
        return _fail(f"data keys are wrapped by key(s) missing from the key file: "
                     f"{', '.join(status['unknown'])}; restore the key file that holds them")
    if pending:
        print(f"rotation unfinished: {pending} data key(s) not yet under {status['active']}; "
              "run `mutual keys rotate`")
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    refused = refuse_inline("retire a key")
    if refused is not None:
        return refused
    require_kernel()
    from server.vault.rotation import retire

    path = get_settings().key_file
    try:
        asyncio.run(retire(path, args.key_id))
    except KeyError_ as exc:
        return _fail(str(exc))
    print(f"mutual: key-encryption key {args.key_id} removed from {path}")
    return 0


def cmd_close_period(args: argparse.Namespace) -> int:
    refused = refuse_inline("close a crypto-period")
    if refused is not None:
        return refused
    require_kernel()
    from server.vault.periods import close_period

    settings = get_settings()
    try:
        result = asyncio.run(close_period(settings.key_file, settings.subject_key_store))
    except KeyError_ as exc:
        return _fail(f"the crypto-period is not closed: {exc}")
    print(f"mutual: crypto-period closed: {result.active} is active; destroyed "
          f"{', '.join(result.destroyed) or 'no older key'}; {result.stored} data key(s) written to "
          f"{settings.subject_key_store}. Back up the key file and the subject-key store now, and destroy "
          "older copies of the key file.")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = commands.add_parser("init", help="write a new key file")
    init.add_argument("--file", required=True)
    init.set_defaults(func=cmd_init)
    rotate = commands.add_parser(
        "rotate", help="add a key-encryption key and rewrap every data key (resumes an unfinished run)")
    rotate.add_argument("--batch", type=_positive, default=500, help="data keys per transaction (default 500)")
    rotate.set_defaults(func=cmd_rotate)
    commands.add_parser("status", help="key-encryption keys and the data keys each wraps").set_defaults(
        func=cmd_status)
    retire = commands.add_parser("retire", help="remove a key-encryption key no data key uses")
    retire.add_argument("key_id")
    retire.set_defaults(func=cmd_retire)
    commands.add_parser(
        "close-period", help="end the crypto-period: new key-encryption key, data keys rewrapped and stored, "
                             "older keys destroyed (each erasure does this)").set_defaults(func=cmd_close_period)


def register(subparsers: Commands) -> Commands:
    """Add the `keys` command group to the `mutual` parser."""
    return register_group(subparsers, "keys", "key management", _add_commands)


def main(argv: list[str] | None = None) -> int:
    return run_standalone("mutual keys", __doc__, _add_commands, argv)


if __name__ == "__main__":
    raise SystemExit(main())
