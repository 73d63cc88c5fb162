"""What an ID token's claims say: when the person signed in, whether with a second factor, roles, team and user name."""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from typing import Any

from server.identity.oidc.provider import (
    _USERNAME_OK,
    TEAM_MAX,
    USERNAME_MAX,
)
from server.kernel import get_kernel
from server.settings import Settings

# ---- claims to a staff account ----------------------------------------------------------------------

# RFC 8176 authentication method references that mean more than a password was used.
MFA_AMR = frozenset({"mfa", "otp", "hwk", "swk", "sc", "fpt", "face", "iris", "retina", "vbm", "pop"})


def authenticated_time(claims: dict[str, Any], now: dt.datetime, asked_max_age: bool) -> dt.datetime | None:
    """When the person last proved who they are at the provider: the ID token's auth_time (never later
    than now), so an old sign-in there is no recent sign-in here (ASVS 6.8.4, 7.5.1). Without a usable
    auth_time: not known (None, never recent) when max_age was sent, since the provider must then name
    it; the time of the callback when the operator switched max_age off."""
    value = claims.get("auth_time")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None if asked_max_age else now
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        seconds = math.inf if value > 0 else -math.inf
    if math.isnan(seconds):
        return None if asked_max_age else now
    return dt.datetime.fromtimestamp(min(max(seconds, 0.0), now.timestamp()), dt.UTC)


def provider_did_mfa(claims: dict[str, Any]) -> bool:
    """The ID token's amr shows more than one factor: "mfa" itself, or at least two methods of which
    one is more than a password (a security key alone, ["hwk"], is one factor)."""
    amr = claims.get("amr")
    raw = [amr] if isinstance(amr, str) else amr if isinstance(amr, list) else []
    values = {v.lower() for v in raw if isinstance(v, str)}
    return "mfa" in values or (len(values) >= 2 and bool(values & (MFA_AMR - {"mfa"})))


def second_factor_stage(claims: dict[str, Any], account: dict[str, Any], settings: Settings) -> str:
    """Staff pass a second factor however they sign in (ASVS 6.3.4, 6.8.4). The provider's counts when
    MUTUAL_OIDC_MFA=provider, or (amr, the default) when the ID token's amr claim shows one; without
    that claim the fallback assumes a password alone was used, and Mutual asks for its own code: from
    an enrolled authenticator always, and enrolment first when MUTUAL_STAFF_MFA=required."""
    provider_ok = settings.oidc_mfa == "provider" or (settings.oidc_mfa == "amr" and provider_did_mfa(claims))
    if provider_ok:
        return "full"
    if account.get("totp_secret"):
        return "mfa"
    return "enrol" if settings.staff_mfa == "required" else "full"


def roles_from_claims(claims: dict[str, Any], settings: Settings) -> list[str]:
    """The Mutual roles the claims map to (known roles only), sorted."""
    value = claims.get(settings.oidc_role_claim)
    if isinstance(value, str):
        values = value.split()
    elif isinstance(value, list):
        values = [v for v in value if isinstance(v, str)]
    else:
        values = []
    known = get_kernel().policies.roles - {"customer"}
    return sorted({settings.oidc_role_map[v] for v in values if v in settings.oidc_role_map} & known)


def team_from_claims(claims: dict[str, Any], settings: Settings) -> str | None:
    value = claims.get(settings.oidc_team_claim)
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str)), None)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:TEAM_MAX]


def username_from_claims(claims: dict[str, Any]) -> str | None:
    value = claims.get("preferred_username")
    if not isinstance(value, str):
        return None
    username = unicodedata.normalize("NFKC", value).strip().casefold()
    if not username or len(username) > USERNAME_MAX or not _USERNAME_OK.match(username):
        return None
    return username
