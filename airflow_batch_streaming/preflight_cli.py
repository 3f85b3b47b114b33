"""`airflow-batch-streaming preflight`: check an image or a whole job before submitting it.

    airflow-batch-streaming preflight IMAGE_URI --location REGION [options]
    airflow-batch-streaming preflight --job JOB.json --location REGION [options]

Exit status: 0 when no finding is an error, 1 when one is, 2 when the command could not
run as asked (bad usage, unreadable or invalid job file). `--json` prints exactly one
JSON object on stdout. Credentials (Application Default Credentials) are looked up only
when the registry asks for a token or the API check runs, so `--no-registry
--no-api-check` works on a machine with no Google credentials at all.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from airflow_batch_streaming import preflight
from airflow_batch_streaming.preflight import CONTAINER_FILESYSTEM_API, Report

PROG = "airflow-batch-streaming preflight"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")


class UsageError(Exception):
    """The command cannot run as asked: exit 2 with a one-line message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Check that an image, or every streaming container of a Batch job, can use "
        "Image Streaming; every problem is reported at once.",
        epilog="Exit status: 0 no errors, 1 errors found, 2 the check could not run as asked.",
    )
    parser.add_argument("image_uri", nargs="?", metavar="IMAGE_URI", help="the image to check")
    parser.add_argument("--job", metavar="JOB.json", help="a Batch job as REST JSON ('-' reads stdin)")
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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.image_uri is None) == (args.job is None):
        parser.error("give either IMAGE_URI or --job JOB.json (exactly one)")
    if args.platform is not None and not _PLATFORM_RE.match(args.platform):
        parser.error(f"--platform must look like OS/ARCH (e.g. linux/arm64), not {args.platform!r}")
    try:
        report = run(args)
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
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
    credentials = AdcCredentials()
    registry = None
    if not args.no_registry:
        from airflow_batch_streaming.registry import RegistryClient, RegistryError

        try:
            registry = RegistryClient(token_provider=credentials.token, base_url=args.registry_url)
        except RegistryError as exc:  # a malformed --registry-url or BATCH_STREAMING_REGISTRY_URL
            message = exc.message.replace("base_url", "--registry-url", 1)
            raise UsageError(f"{message} ({exc.hint})" if exc.hint else message) from None
    api_check = None if args.no_api_check else service_usage_check(credentials)
    common: dict[str, Any] = {
        "project": args.project,
        "platform": args.platform,
        "registry": registry,
        "api_check": api_check,
    }
    if args.job is None:
        return preflight.check_image(args.image_uri, args.location, **common)
    job = _read_job(args.job)
    from airflow_batch_streaming.spec import SpecError

    try:
        return preflight.check_job(job, args.location, **common)
    except SpecError as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        raise UsageError(f"{args.job} is not a valid Batch job: {'; '.join(problems)}") from None


def _read_job(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read the job file {path}: {reason}") from None
    try:
        job = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"the job file {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(job, dict):
        raise UsageError(
            f"the job file {path} must hold a JSON object (a Batch job), not {type(job).__name__}"
        )
    return job


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


def service_usage_check(credentials: AdcCredentials) -> Callable[[str], bool]:
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
        service = client.get_service(
            request={"name": f"projects/{project}/services/{CONTAINER_FILESYSTEM_API}"}, timeout=30.0
        )
        return bool(service.state == service_usage_v1.State.ENABLED)

    return check
