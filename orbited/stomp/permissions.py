"""Who may connect, and who may read or write which destination.

Pure functions of the ``[stomp]`` settings: no sockets, no logging.
Without ``user.*`` keys the broker is in development mode and every login
is accepted.  Destination rules are checked in file order and the first
whose pattern matches decides; when rules of a kind exist, a destination
no rule of that kind matches is denied.  Patterns are shell-style: ``*``
matches any characters, ``/`` included.
"""

from __future__ import annotations

import hashlib
import hmac
from fnmatch import fnmatchcase

from orbited.stomp.errors import AccessRefused
from orbited.stomp.settings import ANONYMOUS, StompSettings


class StompPermissions:
    def __init__(self, settings: StompSettings):
        self.users = settings.users
        self.anonymous = settings["anonymous"]
        self.read_rules = [r for r in settings.rules if r.kind == "read"]
        self.write_rules = [r for r in settings.rules if r.kind == "write"]

    @property
    def development_mode(self) -> bool:
        return not self.users

    def authenticate(self, login: str | None, passcode: str | None) -> str:
        """The user name this connection acts as; raises AccessRefused."""
        if self.development_mode:
            return login or ANONYMOUS
        if not login:
            if self.anonymous:
                return ANONYMOUS
            raise AccessRefused("access refused", "this broker needs a login and passcode")
        stored = self.users.get(login)
        if stored is None or not password_matches(stored, passcode or ""):
            raise AccessRefused("access refused", "login or passcode is wrong")
        return login

    def may_read(self, user: str, destination: str) -> bool:
        return _allowed(self.read_rules, user, destination)

    def may_write(self, user: str, destination: str) -> bool:
        return _allowed(self.write_rules, user, destination)

    @staticmethod
    def check_user_id(user: str, headers: dict[str, str]) -> None:
        """A message's ``user-id`` header must be its sender's login, as RabbitMQ checks, so that
        subscribers may trust it; passed on unchecked, it let any client sign as anyone.
        Raises AccessRefused."""
        claimed = headers.get("user-id")
        if claimed is not None and claimed != user:
            raise AccessRefused("access refused", f"user-id '{claimed}' is not the sender's login '{user}'")


def _allowed(rules: list, user: str, destination: str) -> bool:
    if not rules:
        return True
    for rule in rules:
        if fnmatchcase(destination, rule.pattern):
            return "*" in rule.logins or user in rule.logins
    return False


def password_matches(stored: str, given: str) -> bool:
    """Compare in constant time; 'sha256:<hex>' stores the SHA-256 of the password."""
    if stored.startswith("sha256:"):
        digest = hashlib.sha256(given.encode("utf-8")).hexdigest()
        return hmac.compare_digest(stored[7:].lower(), digest)
    return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))
