"""Coverage-guided fuzzing of one target with atheris (libFuzzer): `python -m
tests.reliability.fuzz_atheris TARGET RUNS`. Exits non-zero on the first crash.

Only the project's own modules are instrumented, so coverage feedback is about
our parsing code and runs stay fast.
"""

from __future__ import annotations

import contextlib
import io
import sys

import atheris

with atheris.instrument_imports(include=["receiver"]):
    from receiver.errors import SignatureError, WebhookError
    from receiver.media.inspect import inspect
    from receiver.media.vcard import parse_vcards
    from receiver.twilio.signature import SignatureVerifier
    from receiver.twilio.webhook import parse_inbound, parse_status

    # The Hypothesis fuzzer's valid webhook; importing it here keeps receiver instrumented.
    from tests.reliability.fuzz import valid_base

TOKEN = "fuzz-auth-token-0123456789abcdef"
VALID = valid_base()


def main(target: str, runs: int, corpus: str | None = None) -> None:
    verifier = SignatureVerifier([TOKEN])

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        if target == "webhook":
            params = [
                (fdp.ConsumeUnicodeNoSurrogates(12), fdp.ConsumeUnicodeNoSurrogates(40))
                for _ in range(fdp.ConsumeIntInRange(0, 12))
            ]
            if fdp.ConsumeBool():
                params = VALID + params
            for parse in (parse_inbound, parse_status):
                with contextlib.suppress(WebhookError):
                    parse(params)
        elif target == "signature":
            url = fdp.ConsumeUnicodeNoSurrogates(60)
            signature = fdp.ConsumeUnicodeNoSurrogates(30)
            params = [
                (fdp.ConsumeUnicodeNoSurrogates(10), fdp.ConsumeUnicodeNoSurrogates(20))
                for _ in range(fdp.ConsumeIntInRange(0, 6))
            ]
            body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) if fdp.ConsumeBool() else None
            try:
                verifier.verify(url, params, signature, body=body)
            except SignatureError:
                return
            raise AssertionError(f"forged signature accepted: {url!r} {signature!r}")
        elif target == "vcard":
            parse_vcards(data)
        elif target == "inspect":
            info = inspect(io.BytesIO(data), None)
            if info.size_bytes != len(data):
                raise AssertionError("size mismatch")
        else:
            raise SystemExit(f"unknown target {target!r}")

    args = [sys.argv[0], f"-runs={runs}", "-max_len=4096", "-rss_limit_mb=2048"]
    atheris.Setup([*args, corpus] if corpus else args, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
