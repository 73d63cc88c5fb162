"""Permission-matrix entries of sign-up, emailed links and password reset (portal only).

Every route here is for visitors who are not signed in. The answers never tell whether an address
has an account: asking for a link for Erika's address is recorded (without the address) and answered
the same for everyone; signing up with it only mails her. Either mail goes to her address on record,
read by the system mailer (an audited read for account security). A signed-in customer is sent home from
the forms."""

from __future__ import annotations

from tests.faces.matrix_base import PAGE, Entry, Expect, ok
from tests.support import ERIKA

HOME = Expect(303, "/profile")
# Mails go to the address on record, which the system mailer reads through the gateway (audited).
MAILER_READ = ("read", "crm_person")
LINK_REQUEST = ok(200, ("email_link_request", "session"), MAILER_READ)
SIGNED_UP = ok(200, MAILER_READ)
REFUSED_LINK = Expect(400, events=(("email_link_redeem", "session", "failed"),))
# Erika's address already has an account: the sign-up mails her (at her address on record) and changes nothing.
SIGNUP = {"given_name": "Someone", "family_name": "Else", "email": ERIKA["email"]}

ENTRIES: list[Entry] = [
    Entry("portal", "GET", "/signup", PAGE, HOME, HOME, PAGE, None, guarded=False),
    Entry("portal", "POST", "/signup", SIGNED_UP, SIGNED_UP, SIGNED_UP, SIGNED_UP, None, form=SIGNUP, guarded=False),
    Entry("portal", "GET", "/signin/email", PAGE, HOME, HOME, PAGE, None, guarded=False),
    Entry("portal", "POST", "/signin/email", LINK_REQUEST, LINK_REQUEST, LINK_REQUEST, LINK_REQUEST, None,
          form={"email": ERIKA["email"]}, guarded=False),
    Entry("portal", "GET", "/signin/reset", PAGE, HOME, HOME, PAGE, None, guarded=False),
    Entry("portal", "POST", "/signin/reset", LINK_REQUEST, LINK_REQUEST, LINK_REQUEST, LINK_REQUEST, None,
          form={"email": ERIKA["email"]}, guarded=False),
    # Without a token (or with an unknown one) the link page explains; opening records nothing.
    Entry("portal", "GET", "/signin/email/open", Expect(400), Expect(400), Expect(400), Expect(400), None,
          guarded=False),
    Entry("portal", "POST", "/signin/email/redeem", REFUSED_LINK, REFUSED_LINK, REFUSED_LINK, REFUSED_LINK, None,
          form={"t": "x" * 43}, guarded=False),
]
