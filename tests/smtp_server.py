"""A local SMTP server for tests: aiosmtpd in its own thread, keeping every message it receives."""

from __future__ import annotations

import email.policy
import threading
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from server import processes

HOST = processes.HOST


class _Handler:
    """Parses each message and adds its envelope as X-MailFrom / X-RcptTo headers, like aiosmtpd's
    own Message handler (aiosmtpd.handlers.Message), and X-Authenticated: yes or no."""

    def __init__(self, on_message: Callable[[EmailMessage], None]) -> None:
        self._on_message = on_message

    async def handle_DATA(self, server: SMTPProtocol, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        # Stored as a mail client would see it: the wire's CRLF line endings become \n.
        parser = BytesParser(policy=email.policy.default)
        message = parser.parsebytes(content.replace(b"\r\n", b"\n"))
        assert isinstance(message, EmailMessage)
        message["X-MailFrom"] = envelope.mail_from or ""
        message["X-RcptTo"] = ", ".join(envelope.rcpt_tos)
        message["X-Authenticated"] = "yes" if session.authenticated else "no"
        self._on_message(message)
        return "250 OK"


class SmtpServer:
    """Plain SMTP (no STARTTLS) on 127.0.0.1 and a free port; with `credentials`, AUTH LOGIN/PLAIN
    is offered without TLS (not required: check a message's X-Authenticated header).

        with SmtpServer() as smtp:
            ... send to smtp.host:smtp.port ...
            mail = smtp.wait_for(lambda m: m["To"] == "erika@example.org")
    """

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.host = HOST
        self.port = processes.free_port()
        self._messages: list[EmailMessage] = []
        self._changed = threading.Condition()
        options: dict[str, Any] = {"enable_SMTPUTF8": True}
        if credentials:
            options |= {"authenticator": _Authenticator(*credentials), "auth_require_tls": False}
        self._controller = Controller(_Handler(self._received), hostname=self.host, port=self.port,
                                      **options)

    def _received(self, message: EmailMessage) -> None:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        """A snapshot of the messages received so far, in order of arrival."""
        with self._changed:
            return list(self._messages)

    def wait_for(self, predicate: Callable[[EmailMessage], bool],
                 timeout: float = 10) -> EmailMessage:
        """The first received message matching `predicate`, waiting up to `timeout` seconds."""
        found: list[EmailMessage] = []

        def match() -> bool:
            found[:] = [m for m in self._messages if predicate(m)][:1]
            return bool(found)

        with self._changed:
            if not self._changed.wait_for(match, timeout):
                raise TimeoutError(f"no matching mail within {timeout} s "
                                   f"({len(self._messages)} received)")
        return found[0]


class _Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self._login = LoginPassword(user.encode(), password.encode())

    def __call__(self, server: SMTPProtocol, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        # handled=False: aiosmtpd answers 535 on failure (True would leave the client hanging).
        return AuthResult(success=auth_data == self._login, handled=False)
