"""Identity rules without a database: password rules, device labels, back-off of the rate limits,
the TOTP step window and the sealed enrolment."""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid

import argon2
import pyotp
import pytest

from server.identity import totp
from server.identity.device import device_label
from server.identity.limits import CAP, lock_for
from server.identity.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    hash_password,
    needs_rehash,
    password_problem,
    verify_password,
)
from server.settings import get_settings

# --- passwords ------------------------------------------------------------------------------------


def test_seven_characters_are_too_few_and_eight_are_enough() -> None:
    assert MIN_LENGTH == 8
    assert password_problem("q7#kLm2") == ("use at least 8 characters; a few words in a row make a good password")
    assert password_problem("q7#kLm2x") is None


def test_more_than_128_characters_are_refused() -> None:
    assert MAX_LENGTH == 128
    assert password_problem("ab cd " * 21 + "ab") is None  # 128
    assert password_problem("ab cd " * 21 + "abc") == "use at most 128 characters"  # 129


@pytest.mark.parametrize("password", ["password1", "PASSWORD1", "Password1", " password1 ", "iloveyou",
                                      "QwErTyUiOp", "1q2w3e4r5t", "12345678"])
def test_common_passwords_are_refused_whatever_their_case(password: str) -> None:
    assert password_problem(password) == ("this password is on the list of the most common passwords; "
                                          "choose another one")


@pytest.mark.parametrize("password", ["correct horse battery staple", "alllowercaseletters",
                                      "ALL CAPITALS AND SPACES", "1234 5678 9012 7777", "ünïcödé wörter hier",
                                      "tabs\tand  double  spaces"])
def test_there_are_no_composition_rules(password: str) -> None:
    assert password_problem(password) is None


CONTEXT = ("this password is built on a word anyone could guess here (your name, the product or the "
           "business); choose another one")


@pytest.mark.parametrize("password", ["Mutual2024!", "mutual12345", "Backoffice#1", "kunden 2024",
                                      "password!!", "Welcome 2 2 2 2"])
def test_passwords_built_on_a_word_of_this_product_or_trade_are_refused(password: str) -> None:
    assert password_problem(password) == CONTEXT


def test_context_words_refuse_only_a_password_that_is_nothing_but_the_word() -> None:
    assert password_problem("mutual support for all of us") is None
    assert password_problem("the staff room kettle") is None


def test_operators_add_their_own_context_words(monkeypatch: pytest.MonkeyPatch) -> None:
    assert password_problem("Beispielstadt 2024") is None
    monkeypatch.setenv("MUTUAL_PASSWORD_CONTEXT_WORDS", " Acme , Beispielstadt,")
    assert password_problem("Beispielstadt 2024") == CONTEXT
    assert password_problem("ACME-1234-!!") == CONTEXT
    assert password_problem("acme rockets are fast") is None


def test_the_accounts_own_words_are_refused_anywhere_in_the_password() -> None:
    assert password_problem("i am alice in wonderland", personal=("alice",)) == CONTEXT
    assert password_problem("i am ALICE in wonderland", personal=("Alice",)) == CONTEXT
    assert password_problem("i am alice in wonderland") is None
    # words shorter than 4 characters would refuse too much
    assert password_problem("bob the builder 1999", personal=("bob",)) is None


def test_length_counts_characters_not_bytes() -> None:
    assert password_problem("äöüßéèêë") is None  # 8 characters, 17 bytes
    assert password_problem("ä" * 128) is None


async def test_a_stored_hash_verifies_only_its_own_password() -> None:
    stored = await hash_password("correct horse battery staple")
    assert await verify_password(stored, "correct horse battery staple")
    assert not await verify_password(stored, "correct horse battery stapler")
    assert not await verify_password(None, "correct horse battery staple")
    assert not await verify_password("not-a-hash", "anything")
    assert not needs_rehash(stored)


async def test_no_password_verifies_against_an_account_without_a_password() -> None:
    """An account without a password stores "" (SSO-only staff, customers who sign in by emailed link
    or passkey). verify_password swaps a missing hash for a dummy hash so both paths cost the same,
    but then refuses only None: the dummy's own password verifies against "". The fix is
    `return _HASHER.verify(stored or _DUMMY, password) and bool(stored)` in passwords.verify_password."""
    assert not await verify_password("", "some password or other")
    assert not await verify_password("", "mutual-timing-equaliser")
    assert not await verify_password(None, "mutual-timing-equaliser")


def test_weaker_argon2_parameters_need_a_rehash() -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash("correct horse battery staple")
    assert needs_rehash(weak)
    assert not needs_rehash(argon2.PasswordHasher().hash("correct horse battery staple"))


# --- device labels --------------------------------------------------------------------------------

UAS = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
    "Safari/537.36": "Chrome on Windows",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
    "Safari/537.36 Edg/126.0.2592.87": "Edge on Windows",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0": "Firefox on Linux",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
    "Safari/605.1.15": "Safari on macOS",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1": "Safari on iOS",
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
    "Mobile/15E148 Safari/604.1": "Safari on iPadOS",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.122 "
    "Mobile Safari/537.36": "Chrome on Android",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
    "Safari/537.36 OPR/111.0.0.0": "Opera on Windows",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
    "Safari/537.36": "Chrome on ChromeOS",
    "Mozilla/5.0 (Android 14; Mobile; rv:128.0) Gecko/128.0 Firefox/128.0": "Firefox on Android",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 "
    "Safari/537.36": "Chrome on Linux",
}


@pytest.mark.parametrize(("user_agent", "label"), list(UAS.items()), ids=list(UAS.values()))
def test_device_label_names_browser_and_system(user_agent: str, label: str) -> None:
    assert device_label(user_agent) == label


@pytest.mark.parametrize(("user_agent", "label"), [
    (None, "Unknown browser"), ("", "Unknown browser"), ("curl/8.5.0", "Unknown browser"),
    ("python-httpx/0.27.0", "Unknown browser"), ("SomeBot/1.0 (Windows)", "Windows"),
    ("Firefox/128.0", "Firefox"),
])
def test_device_label_of_odd_user_agents(user_agent: str | None, label: str) -> None:
    assert device_label(user_agent) == label


def test_device_label_is_short_and_never_the_user_agent_itself() -> None:
    for user_agent in [*UAS, "x" * 5000]:
        label = device_label(user_agent)
        assert len(label) <= 64 and label != user_agent


# --- rate-limit back-off --------------------------------------------------------------------------


def test_failures_up_to_the_limit_cost_no_wait() -> None:
    limit = get_settings().signin_max_failures
    for failures in range(limit):
        assert lock_for(failures) == dt.timedelta(0), failures


def test_each_failure_past_the_limit_doubles_the_wait_up_to_a_day() -> None:
    limit = get_settings().signin_max_failures
    window = dt.timedelta(minutes=get_settings().signin_window_minutes)
    assert lock_for(limit) == window
    assert lock_for(limit + 1) == 2 * window
    assert lock_for(limit + 2) == 4 * window
    assert CAP == dt.timedelta(days=1)
    waits = [lock_for(limit + n) for n in range(40)]
    assert waits == sorted(waits), "the wait never shrinks as failures grow"
    assert max(waits) == CAP
    assert lock_for(limit + 10) == CAP
    assert lock_for(10**6) == CAP


# --- TOTP steps -----------------------------------------------------------------------------------

NOW = 1_800_000_015.0  # 15 s into a step
CURRENT = int(NOW // totp.STEP)
SECRET = pyotp.random_base32()


def _code(step: int, secret: str = SECRET) -> str:
    return pyotp.TOTP(secret).at(step * totp.STEP)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_codes_of_the_previous_current_and_next_step_are_accepted(offset: int) -> None:
    assert totp._matching_step(SECRET, _code(CURRENT + offset), None, now=NOW) == CURRENT + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_codes_two_or_more_steps_away_are_refused(offset: int) -> None:
    code = _code(CURRENT + offset)
    if code in {_code(CURRENT + d) for d in (-1, 0, 1)}:
        pytest.skip("this random secret repeats a code inside the window")
    assert totp._matching_step(SECRET, code, None, now=NOW) is None


def test_steps_up_to_the_last_accepted_one_are_refused() -> None:
    # the last accepted step is the current one: its code and the previous one's are spent
    assert totp._matching_step(SECRET, _code(CURRENT), CURRENT, now=NOW) is None
    assert totp._matching_step(SECRET, _code(CURRENT - 1), CURRENT, now=NOW) is None
    assert totp._matching_step(SECRET, _code(CURRENT + 1), CURRENT, now=NOW) == CURRENT + 1
    # after the next step was used, nothing in the window is left
    for offset in (-1, 0, 1):
        assert totp._matching_step(SECRET, _code(CURRENT + offset), CURRENT + 1, now=NOW) is None
    assert totp._matching_step(SECRET, _code(CURRENT), CURRENT - 1, now=NOW) == CURRENT


@pytest.mark.parametrize("written", ["{a} {b}", " {a}{b} ", "{a}-{b}"])
def test_a_code_may_be_written_with_spaces_or_a_dash(written: str) -> None:
    code = _code(CURRENT)
    assert totp._matching_step(SECRET, written.format(a=code[:3], b=code[3:]), None, now=NOW) == CURRENT


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12345a", "abcd-efgh-jkmn"])
def test_what_is_not_six_digits_is_no_code(code: str) -> None:
    assert totp._matching_step(SECRET, code, None, now=NOW) is None


def test_the_window_moves_with_the_clock() -> None:
    assert totp._matching_step(SECRET, _code(CURRENT), None, now=NOW + 2 * totp.STEP) is None
    later = totp._matching_step(SECRET, _code(CURRENT + 2), None, now=NOW + 2 * totp.STEP)
    assert later == CURRENT + 2


# --- enrolment and recovery codes (the key file, no database) ---------------------------------------


def test_an_enrolment_opens_only_for_its_account_and_only_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    account = uuid.uuid4()
    enrolment = totp.begin_enrolment(account, "alice")
    assert enrolment.secret not in enrolment.sealed
    assert enrolment.uri.startswith("otpauth://totp/") and f"secret={enrolment.secret}" in enrolment.uri
    assert "issuer=Mutual" in enrolment.uri
    assert enrolment.qr_svg.lstrip().startswith("<svg")
    assert totp._enrolment_secret(account, enrolment.sealed) == enrolment.secret
    assert totp._enrolment_secret(uuid.uuid4(), enrolment.sealed) is None
    assert totp._enrolment_secret(account, enrolment.sealed[:-2]) is None
    assert totp._enrolment_secret(account, "") is None
    started = time.time()
    monkeypatch.setattr(totp.time, "time", lambda: started + totp.ENROLMENT_SECONDS + 1)
    assert totp._enrolment_secret(account, enrolment.sealed) is None


async def test_recovery_codes_are_fresh_with_salted_argon2id_hashes_that_ignore_case_and_dashes() -> None:
    fresh = await totp._fresh_codes()
    codes, hashes = fresh.codes, fresh.hashes
    assert len(codes) == totp.RECOVERY_CODES == 10 and len(set(codes)) == 10
    assert all(h.startswith("$argon2id$") for h in hashes) and len(set(hashes)) == 10
    salts = {h.split("$")[4] for h in hashes}
    assert len(salts) == 10 and all(len(base64.b64decode(salt + "==")) >= 16 for salt in salts)
    code = codes[0]
    assert code.replace("-", "") not in hashes[0]
    assert await totp._code_matches(hashes[0], code.upper().replace("-", " "))
    assert not await totp._code_matches(hashes[0], codes[1])


async def test_codes_stored_with_the_old_keyed_hash_still_match() -> None:
    code = totp._new_codes()[0]
    stored = totp._legacy_hashes(code)[0]
    assert await totp._code_matches(stored, code.upper())
    assert not await totp._code_matches(stored, totp._new_codes()[0])
