"""Fast verification: a whole batch of events checked at once in C-level loops (map, zip, tuple
comparison), with the hashed text joined by the database. Any doubt about a batch (a mismatch, a
format change, the first event of a pruned chain, a checkpoint that does not match) leaves the
verifier untouched, and the caller re-checks that batch row by row the slow way, so the verdict,
`checked` and `first_bad_seq` are exactly those of the slow path."""

from __future__ import annotations

import bisect
import hashlib
import operator
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

from server.audit.format import EVENT_FORMAT_LINE, EVENT_FORMATS, HASHED_FIELDS, SEPARATOR

if TYPE_CHECKING:
    from server.audit.verifier import ChainVerifier

_sha256 = hashlib.sha256
_hexdigest = type(hashlib.sha256()).hexdigest
_add = operator.add

# The hashed text as `row_text` (server/audit/format.py) makes it, joined by the database and
# returned as UTF-8 bytes. SQLite: printf formats all fifteen values in one pass (`||` copies the
# growing string at every step, three times slower); the columns are NOT NULL, and the instant is
# stored in its canonical text, so a row stored otherwise just fails here and is re-checked.
SQLITE_TEXT = "CAST(printf('{}', {}) AS BLOB)".format(SEPARATOR.join(["%s"] * len(HASHED_FIELDS)),
                                                      ", ".join(HASHED_FIELDS))
# PostgreSQL: `||` yields NULL for a NULL value (concat_ws would skip it), and the instant is written
# as Python's iso() does (FMYYYY: the year unpadded, as glibc's %Y). Instants Python cannot represent
# (before year 1, from year 10000, infinity) give NULL, so the slow path judges them as it always did.
_PG_AT = ("to_char(at AT TIME ZONE 'UTC', 'FMYYYY-MM-DD HH24:MI:SS.US') || '+00:00'")
_PG_JOINED = " || chr(31) || ".join(("seq::text", _PG_AT, *HASHED_FIELDS[2:]))
PG_TEXT = (f"CASE WHEN at >= '0001-01-01 00:00:00+00' AND at < '10000-01-01 00:00:00+00' "
           f"THEN convert_to({_PG_JOINED}, 'UTF8') END")
FAST_COLUMNS = "id, seq, prev_hash, hash, format_version"


def _digests(version: int, prevs: Sequence[str], texts: Sequence[bytes], log_id: str) -> list[str]:
    """Each event's hash in `version`, computed from its stored prev_hash and joined text."""
    if version == 1:
        inputs = map(_add, map(str.encode, map(_add, prevs, repeat(SEPARATOR))), texts)
    else:
        inner = map(_hexdigest, map(_sha256, texts))
        inputs = map(str.encode, map(SEPARATOR.join, zip(repeat(EVENT_FORMAT_LINE), repeat(log_id), prevs, inner)))
    return list(map(_hexdigest, map(_sha256, inputs)))


def feed_fast(verifier: ChainVerifier, rows: Sequence[Sequence[Any]]) -> bool:
    """Rows as (id, seq, prev_hash, hash, format_version, joined text as bytes), in storage order.

    True: every row is intact, links to the one before and matches every checkpoint and witnessed
    head at its seq, and the verifier has moved past the batch. False: the verifier is unchanged
    and the batch must be fed the slow way (which finds the first problem, if there is one)."""
    if verifier.failure is not None or not rows:
        return not rows and verifier.failure is None
    _ids, seqs, prevs, digests, versions, texts = zip(*rows)
    count, first = len(rows), verifier.expected_seq
    version = versions[0]
    if (version not in EVENT_FORMATS or version < verifier.version or versions.count(version) != count
            or None in texts or seqs != tuple(range(first, first + count))
            or prevs[0] != verifier.expected_prev or prevs[1:] != digests[:-1]):
        return False
    if _digests(version, prevs, texts, verifier.log_id) != list(digests):
        return False
    watched = verifier.watched_sorted
    for index in range(bisect.bisect_left(watched, first), bisect.bisect_left(watched, first + count)):
        seq = watched[index]
        if verifier._mark_problem(seq, digests[seq - first]):
            return False
    verifier.version = version
    verifier._advance(digests[-1], first + count)
    return True
