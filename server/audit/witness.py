"""Witnesses: places outside the database that keep the signed heads this log published.

A witness is configured by URL in MUTUAL_AUDIT_WITNESS (comma-separated). Each scheme maps to a class
with `publish(head)` and `newest()`; built in are `file` (an append-only JSON Lines file, ideally on another
machine or an append-only mount) and `https` (a service that keeps what is POSTed to it and answers a GET
with the newest entry), and WITNESS_KINDS takes more.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from server.audit.format import iso
from server.settings import get_settings

WITNESS_FORMAT = "mutual-audit-witness/1"
HEAD_FIELDS = ("seq", "hash", "at", "key_id", "public_key", "signature", "format_version", "log_id")


class Witness(Protocol):
    name: str
    """How verification names it ("file /mnt/witness/audit.jsonl")."""

    def publish(self, head: Mapping[str, Any]) -> None:
        """Keep a signed head (a checkpoint); never forget an earlier one."""

    def newest(self) -> dict[str, Any] | None:
        """The signed head kept last, or None when nothing was published yet."""


def last_line(path: Path, chunk: int = 65536) -> bytes:
    """The file's last non-empty line, read backwards from its end (memory bounded by that line)."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        buf = b""
        while end > 0:
            start = max(0, end - chunk)
            fh.seek(start)
            buf = fh.read(end - start) + buf
            end = start
            stripped = buf.rstrip(b"\r\n")
            if b"\n" in stripped:
                return stripped.rsplit(b"\n", 1)[1]
        return buf.rstrip(b"\r\n")


class FileWitness:
    """Append-only JSON Lines: one signed head per line, each written with one O_APPEND write and synced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"file {path}"

    def publish(self, head: Mapping[str, Any]) -> None:
        entry = {"kind": "head", "format": WITNESS_FORMAT, **{k: head[k] for k in HEAD_FIELDS},
                 "witnessed_at": iso(dt.datetime.now(dt.UTC))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def newest(self) -> dict[str, Any] | None:
        try:
            line = last_line(self.path)
        except FileNotFoundError:
            return None
        if not line.strip():
            return None
        return _entry(line, f"{self.name} (a file only ever appended to: restore it from its own copy)")


class WitnessError(RuntimeError):
    """A witness cannot be read or written; the message names it and the fix."""


class HttpWitness:
    """A witness service: POST url with one entry (JSON) keeps it; GET url answers the newest entry as JSON
    (204 or 404 when it holds none). The service, not Mutual, must refuse to forget or rewrite entries."""

    TIMEOUT = 5.0

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"url {url.split('?', 1)[0]}"

    def publish(self, head: Mapping[str, Any]) -> None:
        entry = {"kind": "head", "format": WITNESS_FORMAT, **{k: head[k] for k in HEAD_FIELDS},
                 "witnessed_at": iso(dt.datetime.now(dt.UTC))}
        request = urllib.request.Request(self.url, data=json.dumps(entry, sort_keys=True).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.TIMEOUT):  # noqa: S310 - the operator's URL
                pass
        except (urllib.error.URLError, TimeoutError) as exc:
            raise WitnessError(f"{self.name} did not take the head ({exc}); check the URL and that it answers") \
                from exc

    def newest(self) -> dict[str, Any] | None:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.TIMEOUT) as response:  # noqa: S310
                if response.status == 204:
                    return None
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise WitnessError(f"{self.name} answered {exc.code}; check the URL") from exc
        except (urllib.error.URLError, TimeoutError) as exc:
            raise WitnessError(f"{self.name} cannot be reached ({exc})") from exc
        return _entry(body, self.name)


def _entry(line: bytes, name: str) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError as exc:
        raise WitnessError(f"the newest entry of witness {name} is not JSON") from exc
    if not isinstance(entry, dict) or entry.get("format") != WITNESS_FORMAT or not all(k in entry for k in HEAD_FIELDS):
        raise WitnessError(f"the newest entry of witness {name} is not a {WITNESS_FORMAT} head")
    return entry


def _file(url: str) -> Witness:
    parts = urlsplit(url)
    path = unquote(parts.path) if parts.scheme == "file" else url
    if not path:
        raise ValueError(f"audit witness {url!r}: a file witness needs a path, e.g. file:///srv/witness/audit.jsonl")
    return FileWitness(Path(path))


WITNESS_KINDS: dict[str, Callable[[str], Witness]] = {"file": _file, "": _file, "https": HttpWitness,
                                                      "http": HttpWitness}
"""URL scheme -> witness factory (a bare path is a file)."""


def witness_for(url: str) -> Witness:
    scheme = urlsplit(url).scheme if "://" in url else ""
    factory = WITNESS_KINDS.get(scheme)
    if factory is None:
        raise ValueError(f"audit witness {url!r}: unknown kind {scheme!r}; known: "
                         f"{', '.join(k for k in WITNESS_KINDS if k)} (or a plain file path)")
    return factory(url)


def configured() -> list[Witness]:
    """The witnesses of MUTUAL_AUDIT_WITNESS, in order."""
    return [witness_for(url) for url in get_settings().audit_witnesses]
