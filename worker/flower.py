"""`enrich flower`: Celery Flower (the monitoring web UI) with authentication on by default.

    ENRICH_FLOWER_BASIC_AUTH='ops:long-random-password' enrich flower
    enrich flower --address 127.0.0.1 --insecure-localhost-no-auth    # local session only

What it adds to `celery -A worker.app flower`:

- Authentication is required. Without ENRICH_FLOWER_BASIC_AUTH it refuses to start, unless
  bound to 127.0.0.1/localhost/::1 *and* given --insecure-localhost-no-auth.
- Credentials reach Flower through its FLOWER_BASIC_AUTH environment variable, not the
  command line: any local user can read a command line (`ps`), not another user's
  environment. They are never printed, and every other FLOWER_* variable of the calling
  environment is dropped, so only these settings configure Flower.
- Article bodies are not shown. Celery puts a repr of each task's arguments (an article or
  an enriched document, up to 1 KiB) into its task events and the repr of the return value
  into task-succeeded events. Flower's --format_task only covers the HTML pages, not
  /api/tasks or /api/task/info, so worker/flowerconfig.py (passed as --conf, run inside
  Flower) replaces args/kwargs/result of every task event before Flower stores it.
  --tasks_columns leaves those columns off the tasks page too.
- Read-only by default (no revoke, shutdown, pool changes or task submission through
  Flower's API): --allow-control turns control back on.
- os.execve: Flower becomes this process, so SIGTERM from Docker or Kubernetes reaches it.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from worker.settings import Settings, get_settings

LOCALHOST = frozenset({"127.0.0.1", "localhost", "::1"})
EXIT_INSECURE = 3  # refused: no credentials where they are required, or bad credentials
CONF_FILE = Path(__file__).with_name("flowerconfig.py")
# Columns of Flower's tasks page: never args, kwargs or result.
TASKS_COLUMNS = "name,uuid,state,received,started,runtime,worker,retries,exception"
HIDDEN_FIELDS = ("args", "kwargs", "result")
# Flower options only `enrich flower` sets (from settings or its own flags).
RESERVED_OPTIONS = frozenset(
    {"basic_auth", "auth", "address", "port", "unix_socket", "conf", "read_only", "format_task"}
)
_ARTICLE_ID = re.compile(r"""['"]id['"]: ['"]([^'"\\]{1,200})['"]""")


class FlowerConfigError(Exception):
    """The settings or flags do not allow a safe start; the message is safe to print."""


@dataclass(frozen=True)
class FlowerStart:
    argv: list[str]
    env: dict[str, str]  # holds FLOWER_BASIC_AUTH: never print it
    address: str
    port: int
    users: int

    def __repr__(self) -> str:  # the environment holds the credentials
        return f"FlowerStart(address={self.address!r}, port={self.port}, users={self.users})"


def parse_basic_auth(value: str | None) -> list[str]:
    """'user:password[,user2:pass2]' -> ['user:password', ...]; [] when unset or blank.

    An error names the entry by position only: the text may hold a password.
    """
    if value is None or not value.strip():
        return []
    entries = [entry.strip() for entry in value.split(",")]
    for number, entry in enumerate(entries, start=1):
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise FlowerConfigError(
                f"ENRICH_FLOWER_BASIC_AUTH entry {number} of {len(entries)} is not "
                "user:password (entries are separated by commas; a user name cannot hold ':'; "
                "a password cannot hold ',')"
            )
    return entries


def flower_command(
    settings: Settings,
    *,
    port: int | None = None,
    address: str | None = None,
    insecure_localhost_no_auth: bool = False,
    allow_control: bool = False,
    extra: tuple[str, ...] | list[str] = (),
    environ: dict[str, str] | None = None,
) -> FlowerStart:
    """The argv and environment that start Flower.

    Raises FlowerConfigError when the start would not be safe.
    """
    port = settings.flower_port if port is None else port
    address = settings.flower_address if address is None else address
    secret = settings.flower_basic_auth
    credentials = parse_basic_auth(secret.get_secret_value() if secret is not None else None)

    if not credentials:
        if not insecure_localhost_no_auth:
            raise FlowerConfigError(
                f"refusing to start Flower without authentication on {address}:{port}. "
                "Set ENRICH_FLOWER_BASIC_AUTH=user:password (several: user:pw,user2:pw2). "
                "Only for a session on this machine: "
                "--address 127.0.0.1 --insecure-localhost-no-auth"
            )
        if address not in LOCALHOST:
            raise FlowerConfigError(
                f"--insecure-localhost-no-auth works only with --address 127.0.0.1, localhost "
                f"or ::1, not {address}; set ENRICH_FLOWER_BASIC_AUTH=user:password to listen "
                "there"
            )

    for arg in extra:
        name = arg.lstrip("-").partition("=")[0].replace("-", "_")
        if arg.startswith("-") and name in RESERVED_OPTIONS:
            raise FlowerConfigError(
                f"--{name} cannot be passed through to Flower: `enrich flower` sets it "
                "(credentials: ENRICH_FLOWER_BASIC_AUTH; address/port: --address/--port or "
                "ENRICH_FLOWER_ADDRESS/ENRICH_FLOWER_PORT; control: --allow-control)"
            )

    env = {k: v for k, v in (os.environ if environ is None else environ).items()
           if not k.startswith("FLOWER_")}
    if credentials:
        env["FLOWER_BASIC_AUTH"] = ",".join(credentials)
    argv = [
        sys.executable, "-m", "celery", "-A", "worker.app", "flower",
        f"--port={port}",
        f"--address={address}",
        f"--conf={CONF_FILE}",
        f"--tasks_columns={TASKS_COLUMNS}",
        f"--read_only={'false' if allow_control else 'true'}",
        *extra,
    ]
    return FlowerStart(argv, env, address, port, len(credentials))


# --- inside the Flower process (worker/flowerconfig.py calls this) -----------------------------
def scrub_task_event(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of a task event with args, kwargs and result replaced by a placeholder.

    The article id, when the args repr shows one, is kept: it is what an operator looks for.
    """
    if not any(field in event for field in HIDDEN_FIELDS):
        return event
    event = dict(event)
    args = event.get("args")
    match = _ARTICLE_ID.search(args) if isinstance(args, str) else None
    for field in HIDDEN_FIELDS:
        if field in event:
            event[field] = "<hidden>"
    if match and event.get("name") == "enrich.batch":
        event["args"] = f"<hidden: batch, first article {match.group(1)}>"
    elif match:
        event["args"] = f"<hidden: article {match.group(1)}>"
    return event


def install_event_scrubber() -> None:
    """Make Flower's event state scrub every task event before storing it (idempotent)."""
    from flower.events import EventsState

    original = EventsState.event
    if getattr(original, "_enrich_scrubber", False):
        return

    def event(self, event):  # noqa: ANN001 - Flower's signature
        if str(event.get("type", "")).startswith("task-"):
            event = scrub_task_event(event)
        return original(self, event)

    event._enrich_scrubber = True  # type: ignore[attr-defined]
    EventsState.event = event


# --- the command -------------------------------------------------------------------------------
@click.command("flower", context_settings={"ignore_unknown_options": True})
@click.option("--port", "-p", type=click.IntRange(1, 65535), default=None,
              help="Port (default: ENRICH_FLOWER_PORT, 5555).")
@click.option("--address", "-a", default=None,
              help="Address to bind (default: ENRICH_FLOWER_ADDRESS, 0.0.0.0).")
@click.option("--insecure-localhost-no-auth", is_flag=True,
              help="Allow no authentication; only with --address 127.0.0.1/localhost/::1.")
@click.option("--allow-control", is_flag=True,
              help="Let Flower revoke tasks, shut workers down and submit tasks (read-only "
                   "by default).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port, address, insecure_localhost_no_auth, allow_control, flower_args) -> None:
    """Start Flower, the monitoring UI, with basic auth (ENRICH_FLOWER_BASIC_AUTH).

    Extra --name=value arguments go to Flower (e.g. --purge_offline_workers=600).
    """
    settings = get_settings()
    try:
        start = flower_command(
            settings, port=port, address=address,
            insecure_localhost_no_auth=insecure_localhost_no_auth,
            allow_control=allow_control, extra=flower_args,
        )
    except FlowerConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INSECURE)
    where = f"{start.address}:{start.port}"
    if start.users:
        click.echo(f"flower: starting on {where}, basic auth for {start.users} user(s)"
                   f"{'' if allow_control else ', read-only'}", err=True)
    else:
        click.echo(f"flower: WARNING: starting WITHOUT authentication on {where} "
                   "(--insecure-localhost-no-auth); the API answers 401 in this mode", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, start.argv, start.env)  # Flower becomes this process: signals reach it
