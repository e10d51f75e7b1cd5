"""One exception hierarchy for the whole service; views turn these into HTTP statuses."""

from __future__ import annotations


class ReceiverError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ReceiverError, ValueError):
    """A setting is missing or invalid; the message names the variable and the fix."""


class SignatureError(ReceiverError):
    """A webhook's X-Twilio-Signature is missing or does not verify."""


class WebhookError(ReceiverError, ValueError):
    """A webhook request is malformed; the message says which parameter and why."""


class TwiMLError(ReceiverError, ValueError):
    """A TwiML document would break Twilio's rules (body too long, too many media)."""


class IndexUnavailable(ReceiverError):
    """The metadata index (database) cannot be reached."""


class StorageError(ReceiverError):
    """The object store failed or is misconfigured."""


class FetchError(ReceiverError):
    """A media download failed; `reason` is a machine-readable verdict reason."""

    def __init__(
        self,
        message: str,
        reason: str = "fetch_failed",
        *,
        retryable: bool = False,
        status: int | None = None,
    ):
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
        #: The HTTP status that ended the download, when it was one.
        self.status = status


class BlockedHost(FetchError):
    """A media URL (or a redirect hop) points at a host that is not allowed."""

    def __init__(self, message: str):
        super().__init__(message, "blocked_host", retryable=False)


class TooLarge(FetchError):
    """A download went over its per-file or per-message byte cap."""

    def __init__(self, message: str, reason: str = "too_large"):
        super().__init__(message, reason, retryable=False)


class MediaError(ReceiverError, ValueError):
    """A media file cannot be used (wrong type, corrupt, too big to fix)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class TwilioApiError(ReceiverError):
    """Twilio's REST API answered with an error."""

    def __init__(self, code: int | None, message: str, more_info: str | None, status: int):
        super().__init__(f"Twilio error {code} (HTTP {status}): {message}")
        self.code = code
        self.message = message
        self.more_info = more_info
        self.status = status


class OutboundError(ReceiverError, ValueError):
    """An outbound message cannot be sent as asked; the message names the fix."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason
