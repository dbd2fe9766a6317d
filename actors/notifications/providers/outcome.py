"""Whether a failed provider call may have reached the provider: the line between a retry and a guess.

A failure *before* the request left (no connection, a connect timeout, a TLS handshake refused)
proves that nothing happened: the call is retried like any outage. A failure *after* it may have
reached the provider (the connection reset or closed while waiting for the answer, a read timeout,
a gateway's 502 or 504) leaves the outcome unknown: the provider may have accepted the email, SMS
or push. The adapters raise ``store.once.OutcomeUnknownError`` for those, and the ledger applies the
unknown-outcome policy instead of sending again (``store.once``).

The SDKs report both kinds through the same exception classes, so the cut is made on what the
transport says: ``urllib`` (SendGrid) wraps every error raised while connecting and sending in
``URLError`` and lets errors from reading the response through unwrapped; ``requests`` (Twilio,
firebase-admin) says ``ConnectTimeout``, or a ``ConnectionError`` caused by urllib3's
``NewConnectionError`` / ``ConnectTimeoutError``, when no connection was made, and a
``ProtocolError`` ("Connection aborted") or ``ReadTimeout`` once it was. Anything this module does
not recognise counts as "may have reached": a guess must never send twice.
"""

from __future__ import annotations

import urllib.error

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ProtocolError

#: A gateway in front of the provider answered: the request may have been passed on.
AMBIGUOUS_STATUSES = frozenset({502, 504})


def urllib_request_left(error: BaseException) -> bool:
    """For an exception out of ``urllib.request.OpenerDirector.open``: may the request have left?"""
    # do_open wraps every OSError raised by ``HTTPConnection.request`` (connect, TLS, send) in
    # URLError; an HTTPError is an answer, handled by the caller; the rest came from reading one.
    return not (isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError))


def requests_request_left(error: BaseException) -> bool:
    """For an exception raised by ``requests`` (or one it caused): may the request have left?"""
    if isinstance(
        error, requests.ConnectTimeout | requests.exceptions.SSLError | requests.exceptions.InvalidURL
    ):
        return False
    if isinstance(error, requests.ConnectionError):
        cause = error.args[0] if error.args else None
        if isinstance(cause, MaxRetryError):
            cause = cause.reason
        if isinstance(cause, NewConnectionError | ConnectTimeoutError):
            return False
        if isinstance(cause, ProtocolError):
            return True
    return True
