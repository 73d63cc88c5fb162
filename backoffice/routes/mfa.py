"""Staff second factor: the code step of sign-in, first enrolment, and the two-step account page."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from server.errors import TooManyAttempts
from server.identity import limits, totp
from server.identity import service as identity
from server.web import render, requires_recent_signin, requires_staff
from server.web.auth import SESSION_COOKIES, session_cookie
from server.web.signin import client_address

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
WRONG_CODE = ("That code is not right, or was used already. Enter the current code from your app, "
              "or a recovery code.")
EXPIRED = "Your sign-in has expired. Sign in again with your user name and password."


async def _pending(request: Request, stage: str) -> identity.Pending | None:
    pending = await identity.pending_signin(request.cookies.get(SESSION_COOKIES["backoffice"], ""))
    if pending is None or pending.stage != stage:
        return None
    if stage == "enrol" and pending.account["totp_secret"]:
        return None  # enrolled meanwhile (elsewhere): this sign-in starts over and asks for the code
    return pending


def _start_over() -> Response:
    return Redirect("/signin?expired=1", status_code=303)


def _keys(request: Request, account_id: Any) -> list[str]:
    return limits.account_keys(limits.STAFF_MFA, str(account_id), client_address(request))


async def _take(keys: list[str]) -> limits.Attempt | str:
    """Count this code before it is checked (parallel guesses cannot all pass the limit), or say why
    codes are not checked now (too many wrong ones)."""
    try:
        return await limits.take("mfa", "backoffice", keys)
    except TooManyAttempts as exc:
        return str(exc)


async def _wrong(request: Request, keys: list[str], attempt: limits.Attempt) -> None:
    await identity.record_failure("backoffice", keys, identity.anonymous_actor(
        "backoffice", request.state.request_id), kind="mfa", attempt=attempt)


def _enrol_page(request: Request, account_id: uuid.UUID, username: str, action: str, status: int = 200,
                message: str | None = None) -> Response:
    enrolment = totp.begin_enrolment(account_id, username)
    return render(request, "backoffice/mfa_enrol.html", enrolment=enrolment, action=action, message=message,
                  status_code=status, signing_in=action.startswith("/signin"))


@get("/signin/mfa", name="mfa-form")
async def mfa_form(request: Request) -> Response:
    """Second step of sign-in: a code from the authenticator app, or a recovery code."""
    if await _pending(request, "mfa") is None:
        return _start_over()
    return render(request, "backoffice/mfa_code.html")


@post("/signin/mfa", name="mfa-check")
async def mfa_check(request: Request, data: Form) -> Response:
    """Check the code; a right one replaces the waiting session with a signed-in one (a new token)."""
    pending = await _pending(request, "mfa")
    if pending is None:
        return _start_over()
    keys = _keys(request, pending.account["id"])
    attempt = await _take(keys)
    if isinstance(attempt, str):
        return render(request, "backoffice/mfa_code.html", message=attempt, status_code=429)
    factor = await totp.check_code(pending.account, data.get("code", ""))
    if factor is None:
        await _wrong(request, keys, attempt)
        return render(request, "backoffice/mfa_code.html", message=WRONG_CODE, status_code=400)
    await limits.give_back(attempt)
    for key in (keys[0], keys[2]):
        await limits.clear("mfa", "backoffice", key)
    result = await identity.complete_signin(pending, factor, request.state.request_id)
    left = await totp.recovery_codes_left(pending.account["id"]) if factor == "recovery_code" else None
    response = Redirect("/account/two-step?low=1" if left is not None and left <= 3 else "/", status_code=303)
    response.set_cookie(session_cookie("backoffice", result.token))
    return response


@get("/signin/enrol", name="mfa-enrol-form")
async def enrol_form(request: Request) -> Response:
    """Staff must have a second factor: set up an authenticator app before the first sign-in ends."""
    pending = await _pending(request, "enrol")
    if pending is None:
        return _start_over()
    return _enrol_page(request, pending.account["id"], pending.account["username"], "/signin/enrol")


@post("/signin/enrol", name="mfa-enrol")
async def enrol(request: Request, data: Form) -> Response:
    """Confirm the app with its first code; then the sign-in completes and the recovery codes show once."""
    pending = await _pending(request, "enrol")
    if pending is None:
        return _start_over()
    keys = _keys(request, pending.account["id"])
    attempt = await _take(keys)
    if isinstance(attempt, str):
        return _enrol_page(request, pending.account["id"], pending.account["username"], "/signin/enrol", 429,
                           attempt)
    actor = identity.staff_actor(pending.account, request.state.request_id)
    codes = await totp.confirm_enrolment(actor, pending.account["id"], data.get("enrolment", ""),
                                         data.get("code", ""))
    if codes is None:
        await _wrong(request, keys, attempt)
        return _enrol_page(request, pending.account["id"], pending.account["username"], "/signin/enrol", 400,
                           WRONG_CODE.split(",")[0] + ". Scan the new code below and try again.")
    await limits.give_back(attempt)
    result = await identity.complete_signin(pending, "totp", request.state.request_id)
    response = render(request, "backoffice/recovery_codes.html", codes=codes, continue_to="/")
    response.set_cookie(session_cookie("backoffice", result.token))
    return response


@get("/account/two-step", guards=[requires_staff], name="two-step")
async def two_step(request: Request, low: str | None = None) -> Response:
    """My second factor: set it up, or see how many recovery codes are left and make new ones."""
    account_id = uuid.UUID(request.user.id)
    if not await totp.has_totp(account_id):
        return _enrol_page(request, account_id, request.user.display, "/account/two-step")
    left = await totp.recovery_codes_left(account_id)
    flash = "You are running out of recovery codes: make new ones." if low else None
    return render(request, "backoffice/two_step.html", left=left, flash=flash)


@post("/account/two-step", guards=[requires_staff, requires_recent_signin], name="two-step-enrol")
async def two_step_enrol(request: Request, data: Form) -> Response:
    """Set up the authenticator app from the account page (when staff MFA is optional); a privilege change,
    so the session gets a new token."""
    account_id = uuid.UUID(request.user.id)
    if await totp.has_totp(account_id):
        return Redirect("/account/two-step", status_code=303)
    codes = await totp.confirm_enrolment(request.user, account_id, data.get("enrolment", ""), data.get("code", ""))
    if codes is None:
        return _enrol_page(request, account_id, request.user.display, "/account/two-step", 400,
                           "That code is not right. Scan the new code below and try again.")
    result = await identity.rotate_session(request.user, request.auth or "")
    response = render(request, "backoffice/recovery_codes.html", codes=codes,
                      continue_to="/account/sessions?changed=factor")
    response.set_cookie(session_cookie("backoffice", result.token))
    return response


@post("/account/two-step/recovery-codes", guards=[requires_staff, requires_recent_signin],
      name="recovery-codes")
async def new_recovery_codes(request: Request) -> Response:
    """Replace all recovery codes with new ones, shown once."""
    if not await totp.has_totp(uuid.UUID(request.user.id)):
        return Redirect("/account/two-step", status_code=303)
    codes = await totp.regenerate_recovery_codes(request.user)
    return render(request, "backoffice/recovery_codes.html", codes=codes,
                  continue_to="/account/sessions?changed=factor")


def mfa_handlers() -> list[Any]:
    return [mfa_form, mfa_check, enrol_form, enrol, two_step, two_step_enrol, new_recovery_codes]
