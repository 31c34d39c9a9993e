"""Errors meant for the person at the terminal: one clear line, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing service, wrong flag); printed as one line."""

    exit_code = 2


class ServiceUnavailable(UserError):
    """A server the command needs (Kafka, MongoDB, S3) does not answer."""

    exit_code = 3
