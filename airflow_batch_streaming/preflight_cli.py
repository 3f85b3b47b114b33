"""`airflow-batch-streaming preflight`: check an image or a whole job before submitting it.

    airflow-batch-streaming preflight IMAGE_URI --location REGION [options]
    airflow-batch-streaming preflight --job JOB.json --location REGION [options]

Exit status: 0 when no finding is an error, 1 when one is, 2 when the command could not
run as asked (bad usage, unreadable or invalid job file). `--json` prints exactly one
JSON object on stdout, on exit 2 too: `{"ok": false, "error": {"message": ..., "problems":
[...]}}`. `--timeout` bounds the whole run (every registry request and the API check).
Credentials (Application Default Credentials) are looked up only
when the registry asks for a token or the API check runs, so `--no-registry
--no-api-check` works on a machine with no Google credentials at all.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from airflow_batch_streaming import checker
from airflow_batch_streaming.preflight import CONTAINER_FILESYSTEM_API, Report

PROG = "airflow-batch-streaming preflight"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")


DEFAULT_TIMEOUT = 60.0


class UsageError(Exception):
    """The command cannot run as asked: exit 2, with the message and any problems listed."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []


class _Parser(argparse.ArgumentParser):
    json_errors = False

    def error(self, message: str) -> NoReturn:
        if self.json_errors:
            _print_json_error(UsageError(message))
            self.exit(2)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _print_json_error(error: UsageError) -> None:
    payload = {"ok": False, "error": {"message": error.message, "problems": error.problems}}
    sys.stdout.write(json.dumps(payload) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Check that an image, or every streaming container of a Batch job, can use "
        "Image Streaming; every problem is reported at once.",
        epilog="Exit status: 0 no errors, 1 errors found, 2 the check could not run as asked.",
    )
    parser.add_argument("image_uri", nargs="?", metavar="IMAGE_URI", help="the image to check")
    parser.add_argument(
        "--job",
        metavar="JOB.json",
        help="a Batch job as REST JSON or YAML, as gcloud takes it ('-' reads stdin)",
    )
    parser.add_argument(
        "--location",
        required=True,
        metavar="REGION",
        help="the region the VMs run in (with --job: the job's region)",
    )
    parser.add_argument("--project", help="project in which to check the Container File System API")
    parser.add_argument(
        "--registry-url", metavar="URL", help="read *-docker.pkg.dev images from this registry"
    )
    parser.add_argument("--no-registry", action="store_true", help="skip every check that needs the registry")
    parser.add_argument("--no-api-check", action="store_true", help="skip the Service Usage check")
    parser.add_argument(
        "--platform",
        metavar="OS/ARCH",
        help="platform of the VMs (default: from the job's machine type, else linux/amd64)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long overall (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    if "--json" in argv:
        parser.json_errors = True  # type: ignore[attr-defined]
    args = parser.parse_args(argv)
    if (args.image_uri is None) == (args.job is None):
        parser.error("give either IMAGE_URI or --job JOB.json (exactly one)")
    if args.platform is not None and not _PLATFORM_RE.match(args.platform):
        parser.error(f"--platform must look like OS/ARCH (e.g. linux/arm64), not {args.platform!r}")
    if not 0 < args.timeout < 86400:
        parser.error(f"--timeout must be a number of seconds between 0 and 86400, not {args.timeout:g}")
    try:
        report = run(args)
    except UsageError as exc:
        if args.json:
            _print_json_error(exc)
        else:
            lines = [f"{PROG}: error: {exc.message}", *(f"  - {p}" for p in exc.problems)]
            sys.stderr.write("\n".join(lines) + "\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    else:
        sys.stdout.write(report.format_text() + "\n")
    return 0 if report.ok else 1


def run(args: argparse.Namespace) -> Report:
    """The report for parsed arguments; raises `UsageError` for an unusable job file."""
    deadline = time.monotonic() + args.timeout
    credentials = AdcCredentials()
    registry = None
    if not args.no_registry:
        from airflow_batch_streaming.registry import RegistryClient, RegistryError

        try:
            registry = RegistryClient(
                token_provider=credentials.token,
                base_url=args.registry_url,
                base_url_source="--registry-url",
                timeout=min(args.timeout, 30.0),
            )
        except RegistryError as exc:  # a malformed --registry-url or BATCH_STREAMING_REGISTRY_URL
            raise UsageError(f"{exc.message} ({exc.hint})" if exc.hint else exc.message) from None
        registry.deadline = deadline
        registry.deadline_label = f"the --timeout of {args.timeout:g}s"
    api_check = None if args.no_api_check else service_usage_check(credentials, deadline)
    common: dict[str, Any] = {
        "project": args.project,
        "platform": args.platform,
        "registry": registry,
        "api_check": api_check,
    }
    if args.job is None:
        return checker.check_image(args.image_uri, args.location, **common)
    from airflow_batch_streaming.spec import SpecError

    source = "standard input" if args.job == "-" else f"the job file {args.job}"
    try:
        return checker.check_job(_read_job(args.job, source), args.location, **common)
    except SpecError as exc:
        problems = exc.problems or [str(exc)]
        if len(problems) == 1 and problems[0].startswith(source):
            raise UsageError(problems[0]) from None
        raise UsageError(f"{source} is not a valid Batch job ({len(problems)} problems):", problems) from None


def _read_job(path: str, source: str) -> dict[str, Any]:
    from airflow_batch_streaming.jobschema import MAX_JOB_BYTES, load_job_text

    try:
        if path == "-":
            data: bytes = sys.stdin.buffer.read(MAX_JOB_BYTES + 1)
        else:
            with Path(path).open("rb") as stream:
                data = stream.read(MAX_JOB_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    return load_job_text(data, source)


class AdcCredentials:
    """Application Default Credentials, looked up once and only when first needed."""

    def __init__(self) -> None:
        self._credentials: Any = None

    def credentials(self) -> Any:
        if self._credentials is None:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError

            try:
                self._credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            except DefaultCredentialsError as exc:
                reason = " ".join(str(exc).split())[:200]
                raise PermissionError(
                    f"no usable Google Application Default Credentials ({reason}); run "
                    "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
                ) from None
        return self._credentials

    def token(self) -> str:
        """A fresh OAuth access token: what the registry's token exchange needs."""
        import google.auth.transport.requests
        from google.auth.exceptions import GoogleAuthError

        credentials = self.credentials()
        if not credentials.valid:
            try:
                credentials.refresh(google.auth.transport.requests.Request())
            except GoogleAuthError as exc:
                raise PermissionError(
                    f"could not refresh Application Default Credentials ({type(exc).__name__}); run "
                    "`gcloud auth application-default login`"
                ) from None
        return str(credentials.token)


def service_usage_check(credentials: AdcCredentials, deadline: float | None = None) -> Callable[[str], bool]:
    """`project -> enabled` for the Container File System API, via Service Usage GetService.

    With `BATCH_STREAMING_EMULATOR_HOST` set the client talks to the emulator with
    anonymous credentials, so no ADC lookup happens.
    """

    def check(project: str) -> bool:
        from airflow_batch_streaming.hooks import clients

        # Credentials first: without them, skip the client library's import (seconds).
        creds = None if clients.emulator_host() else credentials.credentials()
        from google.cloud import service_usage_v1

        client = clients.service_usage_client(creds)
        timeout = 30.0 if deadline is None else min(30.0, deadline - time.monotonic())
        if timeout <= 0:
            raise TimeoutError("the --timeout ran out before the Service Usage request")
        service = client.get_service(
            request={"name": f"projects/{project}/services/{CONTAINER_FILESYSTEM_API}"}, timeout=timeout
        )
        return bool(service.state == service_usage_v1.State.ENABLED)

    return check
