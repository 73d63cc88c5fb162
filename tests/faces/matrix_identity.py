"""Permission-matrix entries of the identity routes: second factors, account security and sessions,
passkeys, single sign-on and emailed links. Each area adds its entries here."""

from __future__ import annotations

from tests.faces.matrix_base import CUSTOMER_PASSWORD, PAGE, SIGN_IN, STAFF_PASSWORD, Entry, Expect, ok

# A second-factor page without a waiting sign-in (no one in the matrix has one) starts sign-in again.
START_OVER = Expect(303, "/signin?expired=1")
BAD_CURRENT = {"current": "not-the-password", "password": "a new and long password"}
NEW_PASSWORD = "a new and long password"
PASSWORD_SAVED = ok(303, ("password_change", "session"), location="/account/sessions?changed=password")
NO_SUCH_SESSION = Expect(404)
OTHERS_ENDED = ok(303, ("session_revoke_others", "session"), location="/account/sessions?ended=others")


def _account_entries(face: str) -> list[Entry]:
    """/account on a face: each signed-in user for their own account; others are sent to sign in."""
    if face == "backoffice":
        def entry(method: str, route: str, signed_in: Expect, allowed: Expect | None = None, **kw: object) -> Entry:
            return Entry(face, method, route, SIGN_IN, SIGN_IN, SIGN_IN, signed_in, allowed or signed_in, **kw)  # type: ignore[arg-type]
        return [
            entry("GET", "/account", PAGE),
            entry("GET", "/account/password", PAGE),
            entry("POST", "/account/password", Expect(400),
                  Expect(303, "/account/sessions?changed=password", (("password_change", "session", "ok"),),
                         {"current": STAFF_PASSWORD, "password": NEW_PASSWORD}), form=BAD_CURRENT),
            entry("GET", "/account/sessions", PAGE),
            entry("POST", "/account/sessions/{handle:str}/revoke", NO_SUCH_SESSION),
            entry("POST", "/account/sessions/revoke-others", OTHERS_ENDED),
        ]

    def own(method: str, route: str, erika: Expect, max_: Expect | None = None, **kw: object) -> Entry:
        return Entry(face, method, route, SIGN_IN, erika, max_ or erika, SIGN_IN, None, **kw)  # type: ignore[arg-type]
    return [
        own("GET", "/account", PAGE),
        own("GET", "/account/password", PAGE),
        own("POST", "/account/password",
            Expect(303, "/account/sessions?changed=password", (("password_change", "session", "ok"),),
                   {"current": CUSTOMER_PASSWORD, "password": NEW_PASSWORD}), Expect(400), form=BAD_CURRENT),
        own("GET", "/account/sessions", PAGE),
        own("POST", "/account/sessions/{handle:str}/revoke", NO_SUCH_SESSION),
        own("POST", "/account/sessions/revoke-others", OTHERS_ENDED),
    ]


MFA_ENTRIES: list[Entry] = [
    Entry("backoffice", "GET", "/signin/mfa", START_OVER, START_OVER, START_OVER, START_OVER, START_OVER,
          guarded=False),
    Entry("backoffice", "POST", "/signin/mfa", START_OVER, START_OVER, START_OVER, START_OVER, START_OVER,
          form={"code": "123456"}, guarded=False),
    Entry("backoffice", "GET", "/signin/enrol", START_OVER, START_OVER, START_OVER, START_OVER, START_OVER,
          guarded=False),
    Entry("backoffice", "POST", "/signin/enrol", START_OVER, START_OVER, START_OVER, START_OVER, START_OVER,
          form={"code": "123456", "enrolment": "x"}, guarded=False),
    # Every matrix staff account has an authenticator: the page shows the recovery codes left.
    Entry("backoffice", "GET", "/account/two-step", SIGN_IN, SIGN_IN, SIGN_IN, PAGE, PAGE),
    Entry("backoffice", "POST", "/account/two-step", SIGN_IN, SIGN_IN, SIGN_IN,
          Expect(303, "/account/two-step"), Expect(303, "/account/two-step"), form={"code": "123456"}),
    Entry("backoffice", "POST", "/account/two-step/recovery-codes", SIGN_IN, SIGN_IN, SIGN_IN,
          ok(200, ("recovery_codes_regenerate", "session")), ok(200, ("recovery_codes_regenerate", "session"))),
]

IDENTITY_ENTRIES: list[Entry] = [
    *MFA_ENTRIES,
    *_account_entries("backoffice"),
    *_account_entries("portal"),
]
