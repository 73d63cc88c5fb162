"""Permission-matrix entries of the passkey routes (server/web/passkeys.py), both faces.

The matrix posts url-encoded forms without a ceremony in progress: registration answers 400 (no
challenge in this browser) without an event, a passkey sign-in 400 with a failed `signin` event
(it counts towards the rate limit). Removing the literal route pattern finds no passkey: 404.
"""

from __future__ import annotations

from tests.faces.matrix_base import PAGE, SIGN_IN, Entry, Expect

OPTIONS = Expect(200)
NO_CEREMONY = Expect(400)
NOT_FOUND = Expect(404)
PASSKEY_SIGNIN_FAILED = Expect(400, events=(("signin", "session", "failed"),))
LABEL = {"label": "Laptop"}

ENTRIES: list[Entry] = [
    # ---- backoffice: erika and max are anonymous here; any staff account manages its own passkeys.
    Entry("backoffice", "GET", "/account/passkeys", SIGN_IN, SIGN_IN, SIGN_IN, PAGE, PAGE),
    Entry("backoffice", "POST", "/account/passkeys/options", SIGN_IN, SIGN_IN, SIGN_IN, OPTIONS, OPTIONS,
          form=LABEL),
    Entry("backoffice", "POST", "/account/passkeys", SIGN_IN, SIGN_IN, SIGN_IN, NO_CEREMONY, NO_CEREMONY),
    Entry("backoffice", "POST", "/account/passkeys/{passkey_id:str}/delete", SIGN_IN, SIGN_IN, SIGN_IN,
          NOT_FOUND, NOT_FOUND),
    # Sign-in with a passkey is open to everyone (a signed-in visitor may sign in again).
    Entry("backoffice", "POST", "/signin/passkey/options", OPTIONS, OPTIONS, OPTIONS, OPTIONS, OPTIONS,
          guarded=False),
    # Five failures from one client address in a row: the fifth starts the address's lock, recorded once.
    Entry("backoffice", "POST", "/signin/passkey", PASSKEY_SIGNIN_FAILED, PASSKEY_SIGNIN_FAILED,
          PASSKEY_SIGNIN_FAILED, PASSKEY_SIGNIN_FAILED,
          Expect(400, events=(("signin_locked", "session", "denied"), ("signin", "session", "failed"))),
          guarded=False),
    # ---- portal: the customer's own passkeys; a staff cookie counts for nothing here.
    Entry("portal", "GET", "/account/passkeys", SIGN_IN, PAGE, PAGE, SIGN_IN, None),
    Entry("portal", "POST", "/account/passkeys/options", SIGN_IN, OPTIONS, OPTIONS, SIGN_IN, None, form=LABEL),
    Entry("portal", "POST", "/account/passkeys", SIGN_IN, NO_CEREMONY, NO_CEREMONY, SIGN_IN, None),
    Entry("portal", "POST", "/account/passkeys/{passkey_id:str}/delete", SIGN_IN, NOT_FOUND, NOT_FOUND,
          SIGN_IN, None),
    Entry("portal", "POST", "/signin/passkey/options", OPTIONS, OPTIONS, OPTIONS, OPTIONS, None, guarded=False),
    Entry("portal", "POST", "/signin/passkey", PASSKEY_SIGNIN_FAILED, PASSKEY_SIGNIN_FAILED,
          PASSKEY_SIGNIN_FAILED, PASSKEY_SIGNIN_FAILED, None, guarded=False),
]
