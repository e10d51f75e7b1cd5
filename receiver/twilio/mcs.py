"""Twilio's Media Content Service (MCS): where Conversations media lives.

A Conversations message names its files by Media SID (`ME…`) in a Chat
Service (`IS…`). `GET {base}/v1/Services/{IS}/Media/{ME}` with HTTP Basic
auth (API key or Account SID + Auth Token) answers the Media resource, whose
`links.content_direct_temporary` is a short-lived URL that needs no
credentials: https://www.twilio.com/docs/conversations/api/media-resource
The bytes are then fetched like any other media, by the one `Fetcher`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import requests

from receiver.errors import FetchError, OutboundError
from receiver.twilio import sids

_MEDIA_PATH = re.compile(f"/v1/Services/{sids.CHAT_SERVICE.pattern}/Media/{sids.MEDIA.pattern}")


def mcs_media_url(base: str, chat_service_sid: str, media_sid: str) -> str:
    """The MCS Media resource URL of one file (what a media row keeps as its `url`)."""
    return f"{base}/v1/Services/{chat_service_sid}/Media/{media_sid}"


class McsClient:
    """Turns an MCS Media resource URL into the temporary URL of its bytes."""

    def __init__(
        self,
        base: str,
        credentials: tuple[str, str] | None,
        *,
        timeout: tuple[float, float] = (5.0, 10.0),
    ) -> None:
        self.base = base.rstrip("/")
        self._credentials = credentials
        self._timeout = timeout
        self._session = requests.Session()

    def owns(self, url: str) -> bool:
        """Whether `url` is a Media resource of this MCS (else it is fetched directly)."""
        return url.startswith(self.base + "/") and bool(
            _MEDIA_PATH.fullmatch(url[len(self.base) :])
        )

    def temporary_url(self, url: str) -> str:
        """Ask MCS for the file's temporary URL; FetchError says whether a retry may help."""
        if self._credentials is None:
            raise FetchError(
                "MCS media needs credentials: set TWILIO_API_KEY/TWILIO_API_SECRET or "
                "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN"
            )
        try:
            response = self._session.get(
                url, auth=self._credentials, timeout=self._timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise FetchError(
                f"MCS did not answer: {exc.__class__.__name__}", retryable=True
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise FetchError(
                f"MCS answered HTTP {status}: check that the API key SID is paired with its "
                "secret (or the Account SID with its auth token)",
                status=status,
            )
        if status == 404:
            raise FetchError("MCS answered HTTP 404: the media was deleted", status=status)
        if status == 429 or status >= 500:
            raise FetchError(f"MCS answered HTTP {status}", retryable=True, status=status)
        if status != 200:
            raise FetchError(f"MCS answered HTTP {status}", status=status)
        try:
            data: Any = response.json()
            link = data["links"]["content_direct_temporary"]
        except (ValueError, KeyError, TypeError):
            raise FetchError(
                "MCS answered without links.content_direct_temporary", retryable=True
            ) from None
        if not isinstance(link, str) or urlsplit(link).scheme not in ("http", "https"):
            raise FetchError("MCS gave a temporary URL that is not http(s)")
        return link

    def upload(self, chat_service_sid: str, data: bytes, content_type: str) -> str:
        """POST the raw bytes (with their Content-Type) to a Chat Service; the new Media SID.

        https://www.twilio.com/docs/conversations/api/media-resource (Create: the
        body is the file itself). Raises OutboundError naming the fix.
        """
        if self._credentials is None:
            raise OutboundError(
                "sending media into a conversation needs credentials: set "
                "TWILIO_API_KEY/TWILIO_API_SECRET or TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN",
                "not_configured",
            )
        url = f"{self.base}/v1/Services/{chat_service_sid}/Media"
        try:
            response = self._session.post(
                url,
                data=data,
                headers={"Content-Type": content_type},
                auth=self._credentials,
                timeout=(self._timeout[0], max(self._timeout[1], 60.0)),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise OutboundError(
                f"MCS did not answer the upload: {exc.__class__.__name__}; nothing was sent, "
                "try again",
                "mcs_unavailable",
            ) from None
        if response.status_code not in (200, 201):
            fix = (
                "check TWILIO_API_KEY/TWILIO_API_SECRET"
                if response.status_code in (401, 403)
                else "nothing was sent; try again later"
            )
            raise OutboundError(
                f"MCS refused the upload with HTTP {response.status_code}; {fix}", "mcs_refused"
            )
        try:
            sid = response.json()["sid"]
        except (ValueError, KeyError, TypeError):
            sid = None
        if not isinstance(sid, str) or not sid.startswith("ME"):
            raise OutboundError("MCS answered the upload without a Media SID", "mcs_refused")
        return sid

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()
