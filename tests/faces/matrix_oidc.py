"""Permission-matrix entries of staff single sign-on (server/web/oidc.py).

The matrix world has no OpenID provider configured (MUTUAL_OIDC_ISSUER is empty), and then both
routes answer 404 "Single sign-on is not set up here" to everyone, signed in or not, before
touching anything: no challenge, no cookie, no audit event. The configured behaviour (the
provider round trip, refusals and their audit events) is tested against a real provider process
in tests/faces/test_oidc.py.
"""

from __future__ import annotations

from tests.faces.matrix_base import Entry, Expect

NOT_SET_UP = Expect(404)

ENTRIES: list[Entry] = [
    # Sign-in routes: open to anonymous visitors, so not guarded; CSRF still applies to the POST.
    Entry("backoffice", "POST", "/signin/sso", NOT_SET_UP, NOT_SET_UP, NOT_SET_UP, NOT_SET_UP, NOT_SET_UP,
          out_of_scope=NOT_SET_UP, guarded=False),
    # The provider's answer comes back as a plain GET; without a provider there is nothing to finish.
    Entry("backoffice", "GET", "/signin/sso/callback", NOT_SET_UP, NOT_SET_UP, NOT_SET_UP, NOT_SET_UP,
          NOT_SET_UP, out_of_scope=NOT_SET_UP, guarded=False),
]
