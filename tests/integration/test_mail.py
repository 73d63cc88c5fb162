"""Outgoing mail reaches an SMTP server or the development outbox, and failures name no one."""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.mail import Mail, MailNotConfigured, MailNotSent, check_mail_settings, links_in, outbox_messages, send
from server.processes import free_port
from server.settings import get_settings
from tests.smtp_server import SmtpServer

TO = "erika.mustermann@example.org"
LINK = "https://portal.example.org/sign-in/confirm?token=abc123"
MAIL = Mail(to=TO, subject="Sign in to Mutual", text=f"Grüße, Erika!\n\nFollow {LINK}.\n")

Configure = Callable[..., None]


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Configure]:
    """Set MUTUAL_* mail variables (smtp_host="" → outbox); settings are re-read, and restored after."""

    def apply(**env: object) -> None:
        for name, value in env.items():
            monkeypatch.setenv(f"MUTUAL_{name.upper()}", str(value))
        get_settings.cache_clear()

    apply(smtp_host="", smtp_user="", smtp_password="", mail_from="Mutual <no-reply@mutual.example>")
    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


async def test_smtp_delivers_the_mail_with_its_headers_body_and_links(
        configure: Configure, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    configure(smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none")
    with caplog.at_level(logging.INFO, logger="mutual.mail"):
        await send(MAIL)
    got = smtp_server.wait_for(lambda m: m["To"] == TO)
    assert got["Subject"] == MAIL.subject
    assert got["From"] == "Mutual <no-reply@mutual.example>"
    assert got["X-RcptTo"] == TO and got["X-MailFrom"] == "no-reply@mutual.example"
    assert got["X-Authenticated"] == "no"
    assert got["Message-ID"].endswith("@mutual.example>") and got["Date"]
    body = got.get_body(("plain",))
    assert body is not None and body.get_content_charset() == "utf-8"
    assert body.get_content() == MAIL.text
    assert links_in(body.get_content()) == [LINK]
    # Mutual's own log lines (the test SMTP server's logger, aiosmtpd's "mail.log", names the recipient).
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mutual"))
    assert "mail sent" in ours and TO not in ours and "Erika" not in ours


async def test_smtp_logs_in_when_a_user_is_set(configure: Configure) -> None:
    with SmtpServer(credentials=("mutual", "s3cret")) as server:
        configure(smtp_host=server.host, smtp_port=server.port, smtp_security="none",
                  smtp_user="mutual", smtp_password="s3cret")
        await send(MAIL)
        assert server.wait_for(lambda m: m["To"] == TO)["X-Authenticated"] == "yes"
        configure(smtp_password="wrong")
        with pytest.raises(MailNotSent, match="refused the login"):
            await send(MAIL)
        assert len(server.messages) == 1


async def test_without_smtp_host_the_mail_lands_in_the_outbox(
        configure: Configure, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    configure(mail_outbox=outbox)
    await send(MAIL)
    await send(Mail(to="max@example.org", subject="Second", text="no links here"))
    files = sorted(outbox.iterdir())
    assert len(files) == 2 and all(f.suffix == ".eml" for f in files)  # no temporary files left
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    first, second = outbox_messages(outbox)
    assert (first["To"], first["Subject"]) == (TO, MAIL.subject)
    assert links_in(first.get_content()) == [LINK]
    assert second["Subject"] == "Second" and links_in(second.get_content()) == []
    assert outbox_messages(tmp_path / "missing") == []


async def test_an_unreachable_server_raises_naming_the_server_but_not_the_recipient(
        configure: Configure) -> None:
    port = free_port()
    configure(smtp_host="127.0.0.1", smtp_port=port, smtp_security="none")
    with pytest.raises(MailNotSent) as caught:
        await send(MAIL)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "MUTUAL_SMTP_HOST" in message
    assert TO not in message and "Erika" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(("security", "reason"), [("starttls", "does not offer STARTTLS"),
                                                  ("tls", "TLS failed")])
async def test_tls_never_falls_back_to_plain_text(
        configure: Configure, smtp_server: SmtpServer, security: str, reason: str) -> None:
    configure(smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security=security)
    with pytest.raises(MailNotSent, match=reason) as caught:
        await send(MAIL)
    assert TO not in str(caught.value)
    assert smtp_server.messages == []


def test_links_in_finds_http_and_https_urls_without_trailing_punctuation() -> None:
    text = "Open https://a.example/x?y=1, or (http://b.example/z). Not ftp://c.example or mailto:d@e."
    assert links_in(text) == ["https://a.example/x?y=1", "http://b.example/z"]


async def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(
        configure: Configure, tmp_path: Path) -> None:
    configure(mail_outbox=tmp_path)
    for mail in (Mail(to=f"{TO}\r\nBcc: x@example.org", subject="s", text="t"),
                 Mail(to=TO, subject="s\nBcc: x@example.org", text="t")):
        with pytest.raises(ValueError, match="linefeed"):
            await send(mail)
    assert outbox_messages(tmp_path) == []


async def test_outside_development_an_unset_smtp_host_refuses_mail_instead_of_a_plain_text_outbox(
        configure: Configure, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    configure(mail_outbox=outbox, mail_dev_outbox="0", dev="0")
    with pytest.raises(MailNotConfigured) as caught:
        await send(MAIL)
    assert "MUTUAL_SMTP_HOST" in str(caught.value) and "MUTUAL_DEV=1" in str(caught.value)
    assert TO not in str(caught.value)
    assert not outbox.exists()


def test_outside_development_an_unset_smtp_host_stops_the_faces_at_start_up(configure: Configure) -> None:
    from portal.app import create_app

    configure(mail_dev_outbox="0", dev="0")
    with pytest.raises(MailNotConfigured, match="set MUTUAL_SMTP_HOST"):
        create_app()


def test_an_unset_smtp_host_is_fine_in_development_mode_and_a_set_one_anywhere(configure: Configure) -> None:
    configure(mail_dev_outbox="0", dev="1")
    check_mail_settings(get_settings())
    configure(dev="0", smtp_host="smtp.example.org")
    check_mail_settings(get_settings())


def test_mutual_run_refuses_to_start_without_an_smtp_host_outside_development() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MUTUAL_DEV", "MUTUAL_SMTP_HOST", "MUTUAL_MAIL_DEV_OUTBOX")}
    result = subprocess.run([sys.executable, "-m", "server.cli", "run"], capture_output=True, text=True,
                            timeout=60, env=env, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 2
    assert "MUTUAL_SMTP_HOST is not set" in result.stderr
