"""Staff single sign-on through an OpenID Connect provider (authorization code flow with PKCE).

The flow, in three steps:

1. `begin_signin` makes a random state, nonce and PKCE code verifier, keeps them in an
   `AuthChallenge` (kind "oidc", ten minutes) under the hash of a random handle that only the
   browser holds (in a cookie, see server.web.oidc), and returns the provider's authorization URL.
2. The provider signs the person in (and is responsible for their second factor) and sends the
   browser back with `code` and `state`.
3. `finish_signin` takes the challenge (deleting it: one use, whatever the outcome), checks the
   state, exchanges the code (with the code verifier) at the token endpoint, and validates the ID
   token: its signature against the provider's published keys (JWKS), `iss`, `aud`, `azp`, `exp`,
   `iat` and `nonce`. The claims then name the staff account: linked through `ExternalIdentity`,
   whose `subject_hash` is a keyed hash (the "signin" blind-index key) of `issuer|sub`, so neither
   the subject nor the issuer is stored; a first sign-in provisions an account named after
   `preferred_username`. Roles (and the team, when `oidc_team_claim` is set) come from the claims
   at every sign-in.

Provider metadata (discovery) and keys are cached per process; keys are fetched again when a token
names a key the cache does not hold (the provider rotated its keys). Only https providers are
accepted, except on the loopback interface (127.0.0.1, ::1, localhost), where test providers run.

Nothing from the claims goes into logs, audit events or messages: failures carry a short reason
code (`SsoFailed.reason`) and a message written here.
"""

from server.identity.oidc.claims import authenticated_time, provider_did_mfa, second_factor_stage
from server.identity.oidc.flow import begin_signin, finish_signin
from server.identity.oidc.provider import (
    CHALLENGE_MINUTES,
    MSG_TOKEN,
    Provider,
    SsoFailed,
    SsoNotConfigured,
    SsoUnavailable,
    Start,
    configuration_problems,
    is_configured,
    is_loopback,
    transport_problem,
    validate_id_token,
)

__all__ = [
    "CHALLENGE_MINUTES",
    "MSG_TOKEN",
    "Provider",
    "SsoFailed",
    "SsoNotConfigured",
    "SsoUnavailable",
    "Start",
    "authenticated_time",
    "begin_signin",
    "configuration_problems",
    "finish_signin",
    "is_configured",
    "is_loopback",
    "provider_did_mfa",
    "second_factor_stage",
    "transport_problem",
    "validate_id_token",
]
