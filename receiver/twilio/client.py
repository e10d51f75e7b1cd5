"""The process's Twilio REST client, built on first use.

Sending, status refresh, reconciliation and remote media deletion share one
client. It is built lazily so that a service without REST credentials still
starts; only the operations that need Twilio fail, with ConfigError naming
the variables to set.
"""

from __future__ import annotations

from receiver.settings import Settings
from receiver.twilio.rest import TwilioRest


class TwilioClient:
    """Calling it returns the `TwilioRest` client (built from settings the first time)."""

    def __init__(self, settings: Settings, client: TwilioRest | None = None) -> None:
        self.settings = settings
        #: The client once built (or the one given, e.g. with a faster retry policy).
        self.client = client

    def __call__(self) -> TwilioRest:
        """The client; ConfigError naming the variables when credentials are missing."""
        if self.client is None:
            self.client = TwilioRest.from_settings(self.settings)
        return self.client

    def close(self) -> None:
        """Release the client's HTTP session, if it was built."""
        if self.client is not None:
            self.client.close()
