"""Domain errors raised by services; server.web maps them to responses."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: the message is safe to show (it never holds personal data)."""

    status = 400


class NotFound(DomainError):
    status = 404


class PolicyDenied(DomainError):
    status = 403


class Conflict(DomainError):
    status = 409


class Invalid(DomainError):
    """Bad input: `errors` maps each form field to a message naming the problem and the fix."""

    status = 422

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class SignInFailed(DomainError):
    status = 401


class TooManyAttempts(DomainError):
    status = 429


class ReauthenticationRequired(DomainError):
    """A change to how one signs in needs a recent sign-in (ASVS 7.5.1)."""

    status = 403
