"""The `mms-receiver` command (click): serve, simulate, worker, retry, check, and more."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from receiver.commands import backfill as backfill_commands
from receiver.commands import conversations as conversations_commands
from receiver.commands import events as events_commands
from receiver.commands import lifecycle as lifecycle_commands
from receiver.commands import outbound as outbound_commands
from receiver.commands import scan as scan_commands
from receiver.commands import sessions as sessions_commands
from receiver.commands.common import load_services, load_settings
from receiver.errors import ConfigError, ReceiverError
from receiver.settings import SIMULATE_MEDIA_PORT, Settings

if TYPE_CHECKING:
    from receiver.index import MediaIndex

log = logging.getLogger("receiver.cli")


@click.group()
@click.version_option(package_name="mms-receiver")
def main() -> None:
    """Receive Twilio MMS safely and keep every attachment."""


def _own_command() -> str:
    """How to run this same `mms-receiver` from a new shell in this directory.

    `make run` starts it from .venv/bin without that being on PATH, so a bare
    `mms-receiver` would not be found (or would be another installation).
    """
    script = Path(sys.executable).parent / "mms-receiver"
    if not script.exists() or shutil.which("mms-receiver") == str(script):
        return "mms-receiver"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _default_workers() -> int:
    # receiver.server imports gunicorn; only `serve` needs it.
    from receiver.server import default_workers

    return default_workers()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=_default_workers,
    show_default="2 per CPU core, at most 16",
    type=click.IntRange(1, 64),
)
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--ngrok", "use_ngrok", is_flag=True, help="Open an ngrok tunnel (needs NGROK_AUTHTOKEN)."
)
@click.option(
    "--configure-number", default=None, help="With --ngrok: point this Twilio number at the tunnel."
)
def serve(
    host: str, port: int, workers: int, threads: int, use_ngrok: bool, configure_number: str | None
) -> None:
    """Run the production server (gunicorn) on the configured index and storage."""
    from receiver.server import ReceiverServer, gunicorn_options

    settings = load_settings()
    weak = [] if settings.dev_mode else settings.weak_credentials()
    if weak:
        raise click.ClickException("; ".join(weak))
    if settings.dev_mode and host not in ("127.0.0.1", "localhost", "::1"):
        raise click.ClickException(
            "dev mode (no TWILIO_AUTH_TOKEN) only binds to loopback; set TWILIO_AUTH_TOKEN "
            f"to serve on {host}"
        )
    if use_ngrok:
        tunnel = importlib.import_module("receiver.tunnel")
        settings = tunnel.open_tunnel(settings, port, configure_number=configure_number)
    backlog = _startup_check(settings)
    _print_banner(settings, host, port, backlog)
    ReceiverServer(settings, gunicorn_options(host, port, workers, threads)).run()


def _startup_check(settings: Settings) -> dict[str, int]:
    """Upgrade the schema and fail fast on bad storage; the backlog left by an earlier run.

    The check runs in a forked child where fork exists, so gunicorn's master
    never imports the index, storage and media stack its workers import again
    (it would hold tens of megabytes for nothing; docs/performance.md).
    """

    def check() -> dict[str, int]:
        services = load_services(settings)
        try:
            return services.index.backlog()
        finally:
            services.close()

    if not hasattr(os, "fork"):
        return check()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, then leave without cleanup
        os.close(read_end)
        try:
            report: dict[str, object] = {"backlog": check()}
        except click.ClickException as exc:
            report = {"error": exc.message}
        except BaseException as exc:  # reported by the parent
            report = {"error": f"start-up check failed: {type(exc).__name__}: {exc}"}
        with os.fdopen(write_end, "w") as out:
            json.dump(report, out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        answer = reader.read()
    os.waitpid(pid, 0)
    try:
        outcome: dict[str, Any] = json.loads(answer)
    except ValueError:
        raise click.ClickException("the start-up check ended without an answer") from None
    if "error" in outcome:
        raise click.ClickException(str(outcome["error"]))
    backlog: dict[str, int] = outcome["backlog"]
    return backlog


def _print_banner(settings: Settings, host: str, port: int, backlog: dict[str, int]) -> None:
    base = f"http://{host}:{port}"
    click.echo(f"mms-receiver listening on {base}")
    click.echo(f"  webhook URL : {settings.public_url or base}/twilio/messaging")
    click.echo(f"  index       : {settings.describe()['database_url']}")
    click.echo(f"  storage     : {settings.storage_url}")
    pending = backlog.get("pending", 0) + backlog.get("failed", 0)
    if pending:
        click.echo(f"  resuming    : {pending} media item(s) left pending by an earlier run")
    if settings.dev_mode:
        click.echo("")
        click.echo(
            "Dev mode (no TWILIO_AUTH_TOKEN): loopback only, generated credentials in "
            f"{settings.data_dir / 'secrets.json'}"
        )
        click.echo(f"  browser     : {base}/messages  (password: {settings.admin_password})")
        click.echo(f"  API token   : {settings.api_token}")
        click.echo("Next, in another shell:")
        click.echo(
            f"  {_own_command()} simulate --url {base}/twilio/messaging --body hello --sample"
        )
    sys.stdout.flush()


@main.command()
@click.option(
    "--url",
    default="http://127.0.0.1:8080/twilio/messaging",
    show_default=True,
    help="The running service's webhook URL.",
)
@click.option("--from", "from_", default="+15005550006", show_default=True)
@click.option("--to", default="+15017122661", show_default=True)
@click.option("--body", default="", help="Message text.")
@click.option(
    "--media", multiple=True, help="A local file (served from a loopback media host) or a URL."
)
@click.option(
    "--sample",
    is_flag=True,
    help="Also attach a generated photo and contact card (no files of your own needed).",
)
@click.option(
    "--message-sid", default=None, help="Reuse a MessageSid (to test duplicate delivery)."
)
@click.option(
    "--media-port",
    default=SIMULATE_MEDIA_PORT,
    show_default=True,
    type=int,
    help="Loopback port of the temporary media host (must be in RECEIVER_MEDIA_HOSTS).",
)
@click.option(
    "--conversation",
    is_flag=True,
    help="Instead: a group MMS (--from, two more phones and --to as the business) through "
    "the Conversations webhook next to --url (/twilio/conversations).",
)
def simulate(
    url: str,
    from_: str,
    to: str,
    body: str,
    media: tuple[str, ...],
    sample: bool,
    message_sid: str | None,
    media_port: int,
    conversation: bool,
) -> None:
    """Send a correctly signed inbound webhook to a running service and print the TwiML."""

    from receiver import simulate as sim

    settings = load_settings()
    if not settings.auth_token:
        raise click.ClickException(
            "no TWILIO_AUTH_TOKEN and no dev token; run `mms-receiver serve` once"
        )
    if conversation:
        _simulate_conversation(url, from_, to, body, settings)
        return
    files: list[Path] = []
    remote: list[sim.SimulatedMedia] = []
    for item in media:
        if item.startswith(("http://", "https://")):
            remote.append(sim.SimulatedMedia(item, "application/octet-stream"))
        else:
            path = Path(item)
            if not path.is_file():
                raise click.ClickException(f"--media {item}: no such file")
            files.append(path)
    samples_dir = tempfile.TemporaryDirectory() if sample else None
    if samples_dir is not None:
        files.extend(sim.write_samples(Path(samples_dir.name)))
    if len(files) + len(remote) > 10:
        raise click.ClickException(
            "Twilio delivers at most 10 media per message; pass fewer --media"
        )
    sid = message_sid or sim.fake_sid("MM" if files or remote else "SM")
    account = settings.account_sid or "AC" + "0" * 32
    with (
        samples_dir or contextlib.nullcontext(),
        sim.media_host(files, account_sid=account, message_sid=sid, port=media_port) as served,
    ):
        params = sim.inbound_params(
            message_sid=sid,
            account_sid=account,
            from_=from_,
            to=to,
            body=body,
            media=[*served, *remote],
        )
        resp = _post_signed(url, params, settings)
    click.echo(f"MessageSid: {sid}", err=True)
    click.echo(f"HTTP {resp.status_code} {resp.headers.get('Content-Type', '')}", err=True)
    click.echo(resp.text)
    if resp.status_code >= 400:
        sys.exit(1)


def _post_signed(url: str, params: Any, settings: Settings) -> Any:
    """POST signed webhook parameters to a running service; a clear exit when it is not up."""
    import requests

    from receiver import simulate as sim

    try:
        return sim.post_signed(
            url,
            params,
            settings.auth_token,
            signed_url=sim.signed_url_for(url, settings.public_url),
        )
    except requests.RequestException as exc:
        raise click.ClickException(
            f"cannot reach {url} ({exc.__class__.__name__}); is `mms-receiver serve` running?"
        ) from None


def _simulate_conversation(url: str, from_: str, to: str, body: str, settings: Settings) -> None:
    """Post a signed group-MMS exchange to the Conversations webhook; exit 1 on a refusal."""

    from receiver import simulate as sim

    if url.endswith("/twilio/messaging"):
        url = url[: -len("messaging")] + "conversations"
    members = [from_, "+15005550007", "+15005550008"]
    bodies = [body or "Is the technician on the way?", "Photo of the leak", "Thanks!"]
    events = sim.conversation_exchange(
        account_sid=settings.account_sid or "AC" + "0" * 32,
        members=members,
        business=to,
        bodies=bodies,
    )
    failed = False
    for params in events:
        resp = _post_signed(url, params, settings)
        fields = dict(params)
        what = fields.get("MessageSid") or fields.get("ParticipantSid") or fields["ConversationSid"]
        click.echo(f"{fields['EventType']} {what}: HTTP {resp.status_code}")
        failed = failed or resp.status_code >= 400
    click.echo(f"ConversationSid: {dict(events[0])['ConversationSid']}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@click.option("--interval", default=2.0, show_default=True, help="Seconds between idle sweeps.")
@click.option("--once", is_flag=True, help="Process what is due now, then exit.")
def worker(interval: float, once: bool) -> None:
    """Process pending media and due retries (scale-out next to `serve`)."""
    settings = load_settings()
    services = load_services(settings)
    if once:
        total = 0
        while (n := services.pipeline.sweep()) > 0:
            total += n
        sent = 0
        while (n := services.events.dispatcher.run_once()) > 0:
            sent += n
        click.echo(f"processed {total} item(s), {sent} event deliveries")
        services.close()
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # Events go out on their own thread, woken by this process's commits.
    services.events.dispatcher.start()
    click.echo(f"worker {services.pipeline.owner} started")
    services.pipeline.run_forever(stop, interval=interval, extra=services.remote_deletion)
    services.pipeline.shutdown(wait=True)
    services.close()


@main.command()
@click.option("--message", "message_sid", default=None, help="Only this MessageSid.")
def retry(message_sid: str | None) -> None:
    """Put failed media back in the queue with a fresh retry budget."""
    settings = load_settings()
    services = load_services(settings)
    n = services.index.requeue_failed(message_sid)
    click.echo(f"re-queued {n} failed item(s); `serve` or `worker` will process them")
    services.close()


@main.command()
def check() -> None:
    """Verify configuration, index and storage; print what is wrong and how to fix it."""
    from receiver.index import MediaIndex
    from receiver.storage import open_store

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        click.echo(f"configuration: FAIL  {exc}")
        sys.exit(1)
    weak = [] if settings.dev_mode else settings.weak_credentials()
    for problem in weak:
        click.echo(f"configuration: FAIL  {problem}")
    problems = len(weak)
    if not weak:
        click.echo("configuration: ok")
    for key, value in settings.describe().items():
        click.echo(f"  {key:22} {value}")
    try:
        index = MediaIndex.open(settings.database_url)
        index.ping()
        click.echo(f"index: ok  backlog {index.backlog() or {}}")
        problems += _check_events(index)
        index.close()
    except ReceiverError as exc:
        problems += 1
        click.echo(f"index: FAIL  {exc}")
    try:
        open_store(settings.storage_url).check()
        click.echo("storage: ok")
    except (ReceiverError, ValueError) as exc:
        problems += 1
        click.echo(f"storage: FAIL  {exc}")
    problems += _check_clamd(settings)
    _check_ffprobe()
    _check_ffmpeg()
    problems += _check_ocr(settings)
    if settings.dev_mode:
        click.echo("note: dev mode (no TWILIO_AUTH_TOKEN): only loopback, generated token")
    if not settings.public_url:
        click.echo(
            "note: RECEIVER_PUBLIC_URL is not set; behind ngrok or a proxy set it to the URL "
            "configured in Twilio, or signatures will not verify"
        )
    if not settings.rest_credentials:
        click.echo(
            "note: no TWILIO_API_KEY/TWILIO_API_SECRET (or ACCOUNT_SID + AUTH_TOKEN): media "
            "behind Twilio's HTTP auth cannot be fetched and sending is disabled"
        )
    sys.exit(1 if problems else 0)


def _check_clamd(settings: Settings) -> int:
    """Print clamd's state for `check`; 1 when it is configured and does not answer."""
    from receiver.media.scan import ClamdClient, ScanUnavailable

    if not settings.clamd_url:
        click.echo("scanning: off (set RECEIVER_CLAMD_URL to scan files with clamd)")
        return 0
    try:
        version = ClamdClient(settings.clamd_url, timeout=5).version()
    except ScanUnavailable as exc:
        wait = "files wait for it" if settings.scan_mode == "required" else "stored unscanned"
        click.echo(f"clamd: FAIL  {exc}; {wait} (RECEIVER_SCAN={settings.scan_mode})")
        return 1
    click.echo(f"clamd: ok  {version} (RECEIVER_SCAN={settings.scan_mode})")
    return 0


def _check_ffprobe() -> None:
    """Print whether ffprobe is there for audio and video facts (optional)."""
    from receiver.media.probe import ffprobe_version

    version = ffprobe_version()
    if version is None:
        click.echo(
            "ffprobe: missing (apt-get install ffmpeg): audio and video get no container, "
            "codecs or duration, and audio-only 3GPP/MP4 files stay video"
        )
    else:
        click.echo(f"ffprobe: ok  {version}")


def _check_ffmpeg() -> None:
    """Print whether ffmpeg is there for playable copies and poster frames (optional)."""
    from receiver.media.playable import ffmpeg_version

    version = ffmpeg_version()
    if version is None:
        click.echo(
            "ffmpeg: missing (apt-get install ffmpeg): no playable copies of AMR, 3GPP or "
            "QuickTime files and no video poster frames; players get the original, and "
            "their `playable` says failed/no_ffmpeg until a process with ffmpeg makes them"
        )
    else:
        click.echo(f"ffmpeg: ok  {version}")


def _check_ocr(settings: Settings) -> int:
    """Print whether text in images is read; 1 per missing part when RECEIVER_OCR asks for it."""
    from receiver.services import text_reader

    reader = text_reader(settings)
    if reader is None:
        click.echo("ocr: off (set RECEIVER_OCR=eng, or eng+deu+jpn, to read text in images)")
        return 0
    problems = reader.problems()
    for problem in problems:
        click.echo(f"ocr: FAIL  {problem}")
    if not problems:
        click.echo(f"ocr: ok  tesseract {reader.version()}, languages {reader.lang}")
    return len(problems)


def _check_events(index: MediaIndex) -> int:
    """Print the events outbox's state; how many problems (disabled endpoints) it has."""
    from receiver.index.schema import utcnow

    figures = index.event_figures()
    for endpoint in figures.disabled:
        click.echo(
            f"events: FAIL  endpoint {endpoint.id} ({endpoint.url}) is disabled: "
            f"{endpoint.disabled_reason}; fix it, then `mms-receiver endpoints replay "
            f"{endpoint.id} --since 7d` re-enables it"
        )
    oldest = figures.oldest_undelivered
    if oldest is not None:
        age = (utcnow() - oldest).total_seconds()
        click.echo(
            f"events: oldest undelivered event is {age:.0f} s old ({oldest:%Y-%m-%d %H:%M:%S} UTC)"
        )
    elif not figures.disabled:
        click.echo("events: ok  nothing undelivered")
    return len(figures.disabled)


# Every command is registered here, explicitly: a missing module is an ImportError.
outbound_commands.register(main)
lifecycle_commands.register(main)
sessions_commands.register(main)
scan_commands.register(main)
conversations_commands.register(main)
events_commands.register(main)
backfill_commands.register(main)

if __name__ == "__main__":
    main()
