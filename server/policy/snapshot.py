"""The running version: the policy files the apps last loaded, kept in var/policy-snapshot.json."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anyio

from server.policy.engine import PolicySet
from server.policy.loader import FILES, load_policies
from server.settings import get_settings

SNAPSHOT_NAME = "policy-snapshot.json"
SCHEMA_DIR = "schema"
# Policy files are UTF-8; surrogateescape carries any other byte through JSON unchanged, so the
# texts written back hash to the same version.
ENCODING, ERRORS = "utf-8", "surrogateescape"
_SCHEMA_NAME = re.compile(r"[a-z_]+\.schema\.json")

log = logging.getLogger("mutual.policy")


@dataclass(frozen=True)
class Snapshot:
    """The policy files one app start loaded."""

    version: str
    loaded_at: dt.datetime
    files: dict[str, str]
    """access.yml, fields.yml, purposes.yml and retention.yml, as loaded."""
    schemas: dict[str, str]
    """The schema/*.schema.json texts they were validated against."""


def snapshot_path() -> Path:
    return get_settings().var_dir / SNAPSHOT_NAME


def _read_texts(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: (directory / name).read_bytes().decode(ENCODING, ERRORS) for name in names}


def _write_atomically(path: Path, text: str) -> None:
    """Write a temporary file beside ``path`` and rename it over: readers see the old or the new file,
    never half of one, even when both faces start at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _record(policies_dir: Path, version: str, path: Path) -> None:
    schema_dir = policies_dir / SCHEMA_DIR
    schemas = sorted(p.name for p in schema_dir.glob("*.schema.json"))
    document = {
        "version": version,
        "loaded_at": dt.datetime.now(dt.UTC).isoformat(),
        "files": _read_texts(policies_dir, list(FILES)),
        "schemas": _read_texts(schema_dir, schemas),
    }
    _write_atomically(path, json.dumps(document, indent=1))


async def record_loaded(policies_dir: Path, version: str, path: Path | None = None) -> bool:
    """Record the policy files of ``policies_dir`` as the running version ``version``.

    Called at app start-up, just after the policies were loaded. A snapshot that cannot be written is
    logged and skipped (False): it only feeds `mutual policies check`, so serving goes on."""
    target = path or snapshot_path()
    try:
        await anyio.to_thread.run_sync(_record, policies_dir, version, target)
    except OSError as exc:
        log.warning("policy snapshot not recorded in %s (%s); `mutual policies check` will not show "
                    "what changed against this version", target, exc.strerror or exc)
        return False
    return True


def load_snapshot(path: Path | None = None) -> Snapshot | None:
    """The recorded running version, or None if no app has recorded one yet.

    Raises ValueError naming the file when it exists but is not a snapshot."""
    source = path or snapshot_path()
    try:
        raw = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        return Snapshot(version=str(data["version"]), loaded_at=dt.datetime.fromisoformat(data["loaded_at"]),
                        files={str(k): str(v) for k, v in data["files"].items()},
                        schemas={str(k): str(v) for k, v in data.get("schemas", {}).items()})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"policy snapshot {source} is unreadable ({type(exc).__name__}: {exc}); "
                         "delete it, and the next app start records a new one") from None


def snapshot_policies(snapshot: Snapshot, schema_fallback: Path | None = None) -> PolicySet:
    """Load the snapshot's files as a PolicySet (PolicyError if they no longer load).

    A snapshot without schema texts is validated against ``schema_fallback`` (the current schemas)."""
    with tempfile.TemporaryDirectory(prefix="mutual-policy-snapshot-") as tmp:
        directory = Path(tmp)
        (directory / SCHEMA_DIR).mkdir()
        for name in FILES:  # only the known names: a snapshot's keys never choose where to write
            if name in snapshot.files:
                (directory / name).write_bytes(snapshot.files[name].encode(ENCODING, ERRORS))
        schemas = {n: t for n, t in snapshot.schemas.items() if _SCHEMA_NAME.fullmatch(n)}
        if not schemas and schema_fallback is not None:
            schemas = _read_texts(schema_fallback, sorted(p.name for p in schema_fallback.glob("*.schema.json")))
        for name, text in schemas.items():
            (directory / SCHEMA_DIR / name).write_bytes(text.encode(ENCODING, ERRORS))
        return load_policies(directory)
