"""Customer sign-up, emailed sign-in links, address verification and password reset.

    from portal.routes.email_links import email_link_handlers, on_unverified

Asking for a link, or signing up, always gets the same page whether or not the address has an
account; the work behind it (lookup, account, mail) runs after the response has gone. A link opens
a page (GET, which mail scanners may fetch: it uses nothing up) whose button redeems it (POST).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from server.actor import Actor
from server.errors import Invalid, TooManyAttempts
from server.identity import email_links as links
from server.settings import get_settings
from server.web import render
from server.web.auth import session_cookie
from server.web.origin import public_origin
from server.web.signin import client_address, device_of

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
LINK_COOKIE = "__Host-mutual-portal-link"
HOME = "/profile"
SIGNUP_LABELS = {"given_name": "Given name", "family_name": "Family name", "email": "Email address",
                 "password": "Password"}
REQUESTS = {
    # purpose: (path, title, intro, button, sent message)
    "signin": ("/signin/email", "Email me a sign-in link",
               "Enter the email address of your account. We send you a link that signs you in, "
               "no password needed.", "Email me a link",
               "If an account exists for that address, we sent a sign-in link. "
               "It works for {minutes} minutes, in this browser."),
    "reset": ("/signin/reset", "Forgot your password?",
              "Enter the email address of your account. We send you a link to set a new password.",
              "Email me a link",
              "If an account exists for that address, we sent a link to set a new password. "
              "It works for {minutes} minutes, in this browser."),
}
SIGNUP_SENT = ("Check your inbox: we sent a link to confirm the address. "
               "It works for {minutes} minutes, in this browser.")
UNVERIFIED_SENT = ("Confirm your email address first: we sent you a new link. "
                   "It works for {minutes} minutes, in this browser.")
OPEN = {
    # purpose: (heading, text, button)
    "signin": ("Sign in", "Press the button to sign in.", "Sign in"),
    "verify": ("Confirm your email address", "Press the button to confirm your address and sign in.",
               "Confirm my address"),
    "reset": ("Set a new password", "Press the button, then choose your new password.", "Set a new password"),
}
REFUSED = {
    "unknown": "This link is not valid. Copy the whole link from the mail, or ask for a new link.",
    "used": "This link has been used already; each link works once. Ask for a new link.",
    "expired": "This link has expired: links work for {minutes} minutes. Ask for a new link.",
    "other_browser": "This link works only in the browser where you asked for it. Open the link in "
                     "the same browser where you asked for it, or ask for a new link.",
}


def _minutes() -> int:
    return get_settings().email_link_minutes


def _origin(request: Request) -> str:
    """Links in mails point at the configured portal, never at a Host header an attacker may forge."""
    return public_origin(request, "portal")


def _signed_in(request: Request) -> bool:
    return isinstance(request.user, Actor)


def _browser(request: Request) -> str:
    return links.browser_value(request.cookies.get(LINK_COOKIE))


def _link_cookie(value: str) -> Cookie:
    """Top-level navigations from a mail client carry it (lax); scripts never see it."""
    return Cookie(key=LINK_COOKIE, value=value, path="/", secure=True, httponly=True, samesite="lax",
                  max_age=_minutes() * 60)


def _sent(request: Request, message: str, browser: str, task: BackgroundTask, *, title: str) -> Response:
    """The "check your inbox" page; the work (and the mail) follows the response."""
    response = render(request, "portal/email_link_sent.html", title=title,
                      message=message.format(minutes=_minutes()))
    response.set_cookie(_link_cookie(browser))
    response.background = task
    return response


def _request_page(request: Request, purpose: str, *, status_code: int = 200, email: str = "",
                  errors: dict[str, str] | None = None, message: str | None = None) -> Response:
    path, title, intro, button, _ = REQUESTS[purpose]
    return render(request, "portal/email_link_request.html", status_code=status_code, action=path,
                  title=title, intro=intro, button=button, email=email, errors=errors or {},
                  labels={"email": "Email address"}, message=message)


def _signup_page(request: Request, *, status_code: int = 200, values: dict[str, str] | None = None,
                 errors: dict[str, str] | None = None, message: str | None = None) -> Response:
    return render(request, "portal/signup.html", status_code=status_code, values=values or {},
                  errors=errors or {}, labels=SIGNUP_LABELS, message=message)


@get("/signup", name="portal-signup-form")
async def signup_form(request: Request) -> Response:
    """Create a customer account: name and email address, a password if wanted."""
    if _signed_in(request):
        return Redirect(HOME, status_code=303)
    return _signup_page(request)


@post("/signup", name="portal-signup")
async def signup(request: Request, data: Form) -> Response:
    """Sign up; the answer is the same whether or not the address has an account already."""
    values = {k: data.get(k, "") for k in ("given_name", "family_name", "email")}
    try:
        form = links.check_signup(data)
    except Invalid as exc:
        return _signup_page(request, status_code=400, values=values, errors=exc.errors)
    try:
        await links.limit_signup(client_address(request), form.email)
    except TooManyAttempts as exc:
        return _signup_page(request, status_code=429, values=values, message=str(exc))
    browser = _browser(request)
    return _sent(request, SIGNUP_SENT, browser,
                 BackgroundTask(links.deliver_signup, form, browser, _origin(request)), title="Check your inbox")


def _request_handlers(purpose: str) -> list[Any]:
    path = REQUESTS[purpose][0]

    @get(path, name=f"portal-{purpose}-link-form")
    async def request_form(request: Request) -> Response:
        """Ask for an emailed link."""
        if _signed_in(request):
            return Redirect(HOME, status_code=303)
        return _request_page(request, purpose)

    @post(path, name=f"portal-{purpose}-link")
    async def request_link(request: Request, data: Form) -> Response:
        """Email a link if the address has an account; the answer is the same if it has none."""
        raw = data.get("email", "")
        try:
            email = links.check_email(raw)
        except Invalid as exc:
            return _request_page(request, purpose, status_code=400, email=raw, errors=exc.errors)
        try:
            await links.limit_link_request(purpose, email, client_address(request), request.state.request_id)
        except TooManyAttempts as exc:
            return _request_page(request, purpose, status_code=429, email=raw, message=str(exc))
        browser = _browser(request)
        return _sent(request, REQUESTS[purpose][4], browser,
                     BackgroundTask(links.deliver_link, purpose, email, browser, _origin(request)),
                     title="Check your inbox")

    return [request_form, request_link]


def _refused(request: Request, exc: links.LinkRefused) -> Response:
    retry = REQUESTS["reset" if exc.purpose == "reset" else "signin"][0]
    return render(request, "portal/email_link_open.html", status_code=400, token="", purpose=exc.purpose,
                  heading="This link does not work", problem=REFUSED[exc.reason].format(minutes=_minutes()),
                  retry=retry)


@get("/signin/email/open", name="portal-email-link-open")
async def open_link(request: Request, t: str = "") -> Response:
    """Where an emailed link lands. It only shows a button: mail scanners fetch links too, so only
    the button (a POST) uses the link."""
    try:
        purpose = await links.peek(t, request.cookies.get(LINK_COOKIE))
    except links.LinkRefused as exc:
        return _refused(request, exc)
    heading, text, button = OPEN[purpose]
    return render(request, "portal/email_link_open.html", token=t, purpose=purpose, heading=heading,
                  text=text, button=button, problem=None)


@post("/signin/email/redeem", name="portal-email-link-redeem")
async def redeem_link(request: Request, data: Form) -> Response:
    """Use the link: sign in (a new session); a reset link goes on to the password page."""
    try:
        result = await links.redeem(data.get("t", ""), request.cookies.get(LINK_COOKIE),
                                    request.state.request_id, device_of(request), replaces=request.auth)
    except links.LinkRefused as exc:
        return _refused(request, exc)
    response = Redirect("/account/password" if result.purpose == "reset" else HOME, status_code=303)
    response.set_cookie(session_cookie("portal", result.signed_in.token))
    return response


async def on_unverified(request: Request, account_id: uuid.UUID) -> Response:
    """The sign-in handler's hook for a right password on an account whose address is not confirmed
    yet: mail a new verification link (rate limited) and say so."""
    title = "Confirm your email address"
    try:
        await links.limit_verify_resend(account_id, client_address(request), request.state.request_id)
    except TooManyAttempts as exc:
        return render(request, "portal/email_link_sent.html", status_code=429, title=title, message=None,
                      problem=str(exc))
    email = str((await request.form()).get("login", ""))
    browser = _browser(request)
    return _sent(request, UNVERIFIED_SENT, browser,
                 BackgroundTask(links.deliver_verify_link, account_id, email, browser, _origin(request)),
                 title=title)


def email_link_handlers() -> list[Any]:
    """Every route of this module, for portal/routes/__init__.py."""
    return [signup_form, signup, *_request_handlers("signin"), *_request_handlers("reset"), open_link,
            redeem_link]
