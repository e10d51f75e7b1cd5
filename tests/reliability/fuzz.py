"""Fuzzing of everything that reads untrusted input: webhook parser, signature verifier,
vCard parser and `inspect`. A crash is any exception other than the documented one.

Hypothesis generates structured input (Twilio-like parameter lists, URLs and
headers, mutated real files); atheris, when installed, adds coverage-guided
byte fuzzing in a subprocess per target (`tests.reliability.fuzz_atheris`).
"""

from __future__ import annotations

import contextlib
import io
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.errors import SignatureError, WebhookError
from receiver.media.inspect import inspect
from receiver.media.vcard import parse_vcards
from receiver.twilio.signature import SignatureVerifier, candidate_urls, rebuild_url
from receiver.twilio.webhook import parse_inbound, parse_status

TOKEN = "fuzz-auth-token-0123456789abcdef"
SIGNED_URL = "https://mms.example.com/twilio/messaging"


@dataclass
class FuzzResult:
    """Inputs tried and crashes found for one target."""

    target: str
    engine: str
    inputs: int = 0
    crashes: list[str] = field(default_factory=list)
    accepted_forgeries: int = 0
    seconds: float = 0.0
    slowest: float = 0.0


# -- strategies ----------------------------------------------------------------------

TWILIO_NAMES = [
    "MessageSid",
    "SmsSid",
    "SmsMessageSid",
    "AccountSid",
    "MessagingServiceSid",
    "From",
    "To",
    "Body",
    "NumMedia",
    "NumSegments",
    "MediaUrl0",
    "MediaUrl1",
    "MediaUrl9",
    "MediaUrl10",
    "MediaContentType0",
    "MediaContentType1",
    "FromCity",
    "ToCountry",
    "OptOutType",
    "ApiVersion",
    "SmsStatus",
    "ProfileName",
    "WaId",
    "MessageStatus",
    "ErrorCode",
    "RawDlrDoneDate",
]
SID_LIKE = st.builds(
    lambda p, s: p + s,
    st.sampled_from(["SM", "MM", "AC", "MG", "ME", "XX", ""]),
    st.text("0123456789abcdefABCDEF", min_size=0, max_size=36),
)
VALUES = st.one_of(
    st.text(max_size=80),
    SID_LIKE,
    st.sampled_from(
        [
            "0",
            "1",
            "10",
            "11",
            "-1",
            "999999",
            "1e3",
            " 2",
            "",
            "+15550001111",
            "whatsapp:+15550001111",
            "sms:",
            ":",
            "https://api.twilio.com/x/ME" + "a" * 32,
            "http://127.0.0.1:1/",
            "javascript:alert(1)",
            "\x00",
            "\r\n",
            "%00",
        ]
    ),
)
PAIRS = st.lists(
    st.tuples(st.one_of(st.sampled_from(TWILIO_NAMES), st.text(max_size=20)), VALUES), max_size=30
)


def valid_base() -> list[tuple[str, str]]:
    return [
        ("MessageSid", "MM" + "a" * 32),
        ("AccountSid", "AC" + "b" * 32),
        ("From", "+15550001111"),
        ("To", "+15550002222"),
        ("NumMedia", "1"),
        ("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME1"),
        ("MediaContentType0", "image/jpeg"),
        ("Body", "hi"),
    ]


@st.composite
def webhook_params(draw: Any) -> list[tuple[str, str]]:
    """Random parameter lists, half of them small mutations of a valid webhook."""
    if draw(st.booleans()):
        return draw(PAIRS)
    base = valid_base()
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["drop", "change", "add", "dup"]))
        if action == "drop" and base:
            base.pop(draw(st.integers(0, len(base) - 1)))
        elif action == "change" and base:
            i = draw(st.integers(0, len(base) - 1))
            base[i] = (base[i][0], draw(VALUES))
        elif action == "add":
            base.append((draw(st.sampled_from(TWILIO_NAMES)), draw(VALUES)))
        elif base:
            base.append(base[draw(st.integers(0, len(base) - 1))])
    return base


URLS = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda s, h, p, q: f"{s}://{h}{p}{q}",
        st.sampled_from(["http", "https", "HTTPS", "ftp", ""]),
        st.sampled_from(
            [
                "mms.example.com",
                "mms.example.com:443",
                "[::1]:80",
                "u:p@h",
                "",
                "h:",
                "h:99999",
                "\u00e9.example",
            ]
        ),
        st.sampled_from(["", "/", "/twilio/messaging", "/%zz", "/a b"]),
        st.sampled_from(["", "?", "?bodySHA256=", "?bodySHA256=abc", "?a=1&a=2", "#frag"]),
    ),
)
SIGNATURES = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.binary(max_size=30).map(lambda b: __import__("base64").b64encode(b).decode()),
)


@st.composite
def mutated_file(draw: Any, seeds: list[bytes]) -> bytes:
    """A real file with bytes flipped, inserted, removed or cut; or plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == 2:
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            del data[pos:]
    return bytes(data)


def seed_files() -> list[bytes]:
    from tests.support import samples

    return [
        samples.jpeg(32, 24),
        samples.png(24, 24),
        samples.gif_animated(frames=3, width=16, height=16),
        samples.webp(24, 16),
        samples.bmp(8, 8),
        samples.vcard(),
        samples.mp4_header(),
        samples.pdf(),
        samples.plain_zip(),
        b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;ENCODING=QUOTED-PRINTABLE:=C3=A9;x\r\n"
        b"TEL;CELL:+1555\r\nAGENT:\r\nBEGIN:VCARD\r\nFN:inner\r\nEND:VCARD\r\nEND:VCARD\r\n",
    ]


# -- hostile webhook bodies (HTTP) -----------------------------------------------------------

HOSTILE_TYPES = (
    "application/json",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-8",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
)
BODY_LIMIT = 64 * 1024


def hostile_body(rng: random.Random) -> tuple[str, bytes]:
    """A (Content-Type, body) an attacker might post to a webhook: deep nesting, huge
    numbers, broken encodings, many fields, random bytes (all within the 64 KiB cap)."""
    kind = rng.randrange(10)
    n = rng.choice([1, 31, 32, 33, 100, 1_000, 30_000, BODY_LIMIT // 2 - 2])
    if kind == 0:  # deep arrays, closed or not
        body = b"[" * n + (b"]" * n if rng.random() < 0.5 else b"")
    elif kind == 1:  # deep objects
        body = b'{"a":' * min(n, 12_000) + b"1" + b"}" * min(n, 12_000)
    elif kind == 2:  # huge integers and floats, bare or inside an object
        digits = rng.choice(["9" * n, "-" + "1" * n, "1e" + "9" * min(n, 400), "0." + "0" * n])
        digits = digits[: BODY_LIMIT - 20]
        body = (digits if rng.random() < 0.5 else '{"MessageSid":' + digits + "}").encode()
    elif kind == 3:  # brackets hidden inside strings, escapes, NaN and friends
        body = rng.choice(
            [
                b'{"Body":"' + b"[" * n + b'"}',
                b'{"a":"\\' + b"\\" * min(n, 20_000) + b'"}',
                b'{"a":NaN,"b":Infinity,"c":-Infinity}',
                b'{"a":"\\ud800"}',
                b"\xef\xbb\xbf{}",
            ]
        )
    elif kind == 4:  # invalid UTF-8
        body = bytes(b | 0x80 for b in rng.randbytes(rng.randrange(1, 200)))
    elif kind == 5:  # many form fields, broken percent-escapes
        fields = rng.randrange(1, 4_000)
        body = b"&".join(b"MediaUrl%d=%%zz%%" % i for i in range(fields))
    elif kind == 6:  # a plausible form with one hostile value
        value = rng.choice([b"%00" * 100, b"%ff%fe", b"+" * 1000, b"=" * 500, b"%" * 300])
        body = b"MessageSid=MM" + b"a" * 32 + b"&AccountSid=AC" + b"b" * 32 + b"&Body=" + value
    elif kind == 7:  # random bytes
        body = rng.randbytes(rng.randrange(0, 2_000))
    elif kind == 8:  # JSON that is valid but the wrong shape
        body = rng.choice([b"[]", b"null", b'"x"', b"1", b'{"MessageSid":[1,2,{"a":[]}]}'])
    else:  # past the size cap
        body = b"A" * (BODY_LIMIT + rng.randrange(1, 4_096))
    return rng.choice(HOSTILE_TYPES), body[: BODY_LIMIT + 4_096]


class HostilePoster:
    """Posts hostile bodies to a real app (Flask test client): unsigned, wrongly signed,
    or correctly signed with bodySHA256, so verified input also meets the depth bound."""

    def __init__(self, tmp: Path) -> None:
        from receiver import create_app
        from receiver.settings import Settings

        settings = Settings.from_env(
            {
                "RECEIVER_DATA_DIR": str(tmp),
                "TWILIO_AUTH_TOKEN": TOKEN,
                "TWILIO_ACCOUNT_SID": "AC" + "c" * 32,
                "RECEIVER_PUBLIC_URL": "https://mms.example.com",
                "RECEIVER_SECRET_KEY": "k" * 32,
                "RECEIVER_INLINE_DEADLINE": "0",
            }
        )
        self.app = create_app(settings)
        self.client = self.app.test_client()

    def post(self, rng: random.Random, content_type: str, body: bytes) -> int:
        """The status of one hostile request."""
        from receiver.twilio.signature import body_sha256, compute_signature

        path = rng.choice(["/twilio/messaging", "/twilio/status"])
        how = rng.randrange(3)
        headers = {"Content-Type": content_type} if content_type else {}
        query = ""
        if how >= 1:
            query = f"?bodySHA256={body_sha256(body)}"
        if how == 1:
            headers["X-Twilio-Signature"] = "forged" + str(rng.random())
        elif how == 2:
            headers["X-Twilio-Signature"] = compute_signature(
                TOKEN, f"https://mms.example.com{path}{query}"
            )
        status: int = self.client.post(path + query, data=body, headers=headers).status_code
        return status

    def close(self) -> None:
        self.app.extensions["receiver"].close()


# -- targets ----------------------------------------------------------------------------


def _record(result: FuzzResult, fn: Callable[[], None], describe: Callable[[], str]) -> None:
    started = time.perf_counter()
    try:
        fn()
    except Exception as exc:
        if len(result.crashes) < 20:
            result.crashes.append(
                f"{type(exc).__name__}: {exc} <- {describe()[:300]}\n"
                f"{traceback.format_exc(limit=4)}"
            )
    finally:
        result.inputs += 1
        result.slowest = max(result.slowest, time.perf_counter() - started)


def run_hypothesis(target: str, examples: int) -> FuzzResult:
    """Run one target for `examples` generated inputs."""
    result = FuzzResult(target, "hypothesis")
    conf = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    verifier = SignatureVerifier([TOKEN])
    cleanup: list[Callable[[], None]] = []

    if target == "webhook":

        @conf
        @given(webhook_params())
        def check(params: list[tuple[str, str]]) -> None:
            def body() -> None:
                for parse in (parse_inbound, parse_status):
                    with contextlib.suppress(WebhookError):
                        parse(params)

            _record(result, body, lambda: repr(params))

    elif target == "signature":

        @conf
        @given(
            URLS,
            PAIRS,
            SIGNATURES,
            st.one_of(st.none(), st.binary(max_size=64)),
            st.dictionaries(
                st.sampled_from(
                    [
                        "X-Forwarded-Proto",
                        "X-Forwarded-Host",
                        "X-Forwarded-Port",
                        "X-Forwarded-Prefix",
                    ]
                ),
                st.text(max_size=30),
            ),
            st.integers(0, 3),
        )
        def check(
            url: str,
            params: list[tuple[str, str]],
            signature: str | None,
            body: bytes | None,
            headers: dict[str, str],
            hops: int,
        ) -> None:
            def run() -> None:
                candidate_urls(url)
                rebuilt = rebuild_url(
                    public_url="",
                    proxy_hops=hops,
                    scheme="https",
                    host="mms.example.com",
                    raw_path="/twilio/messaging",
                    query="",
                    headers=headers,
                )
                for checked in (url, rebuilt):
                    try:
                        verifier.verify(checked, params, signature, body=body)
                    except SignatureError:
                        continue
                    result.accepted_forgeries += 1

            _record(result, run, lambda: repr((url, params, signature, body, headers)))

    elif target == "webhook_http":
        work = Path(tempfile.mkdtemp(prefix="mmsr-fuzz-http-"))
        poster = HostilePoster(work)
        cleanup += [poster.close, lambda: shutil.rmtree(work, ignore_errors=True)]

        @conf
        @given(st.randoms(use_true_random=False))
        def check(rng: random.Random) -> None:
            content_type, body = hostile_body(rng)

            def run() -> None:
                status = poster.post(rng, content_type, body)
                if status >= 500:
                    raise AssertionError(f"answered {status}")

            _record(result, run, lambda: repr((content_type, body[:80], len(body))))

    elif target == "vcard":
        seeds = [s for s in seed_files() if b"VCARD" in s]

        @conf
        @given(
            st.one_of(
                mutated_file(seeds), st.text(max_size=400).map(str.encode), st.binary(max_size=512)
            )
        )
        def check(data: bytes) -> None:
            def run() -> None:
                parse_vcards(data)
                parse_vcards(data.decode("latin-1"))

            _record(result, run, lambda: repr(data))

    elif target == "inspect":
        seeds = seed_files()

        @conf
        @given(
            mutated_file(seeds),
            st.sampled_from(
                [None, "", "image/jpeg", "text/vcard", "application/pdf", "x/y; a=b", "\x00"]
            ),
        )
        def check(data: bytes, declared: str | None) -> None:
            def run() -> None:
                info = inspect(io.BytesIO(data), declared)
                if info.size_bytes != len(data):
                    raise AssertionError(f"size {info.size_bytes} != {len(data)}")

            _record(result, run, lambda: repr((data[:64], declared)))

    else:
        raise ValueError(f"unknown fuzz target {target!r}")

    started = time.monotonic()
    try:
        check()
    except Exception as exc:  # a failing example was already recorded; hypothesis re-raises
        if not result.crashes:
            result.crashes.append(f"{type(exc).__name__}: {exc}")
    finally:
        for step in cleanup:
            step()
    result.seconds = time.monotonic() - started
    return result


TARGETS = ("webhook", "signature", "webhook_http", "vcard", "inspect")
#: Targets that atheris fuzzes too (webhook_http drives a whole app: hypothesis only).
ATHERIS_TARGETS = ("webhook", "signature", "vcard", "inspect")


# -- atheris -------------------------------------------------------------------------------


def atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_atheris(target: str, runs: int, timeout: float = 900) -> FuzzResult:
    """Coverage-guided fuzzing of one target for `runs` inputs, in a subprocess."""
    result = FuzzResult(target, "atheris")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mmsr-corpus-") as corpus:
        # Real files as the starting corpus: libFuzzer mutates from there.
        for n, seed in enumerate(seed_files()):
            Path(corpus, f"seed{n}").write_bytes(seed)
        proc = subprocess.run(
            [sys.executable, "-m", "tests.reliability.fuzz_atheris", target, str(runs), corpus],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=Path(__file__).parents[2],
        )
    result.seconds = time.monotonic() - started
    done = [line for line in proc.stderr.splitlines() if line.startswith("Done ")]
    result.inputs = int(done[-1].split()[1]) if done else 0
    if proc.returncode != 0 or not done:
        result.crashes.append(proc.stderr[-3000:])
    return result
