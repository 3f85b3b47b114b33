"""A misbehaving registry during the preflight: a clear finding, bounded time, no credential shown.

Row 9 of the reliability list. The registry is `StaticRegistry` (canned answers on
127.0.0.1), reached the way a deployment does it: an Artifact Registry image reference, the
registry URL override, and a token provider that returns an access token. Each fault must
become one error finding with the right code, within a bound far from a hang (`timeout=1`
per inspect, 10 s allowed), and neither the token nor the Basic credential made from it may
appear in any message, hint, rendering of the report, the task's error, or any log line.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest
from reliability_support import IMAGE, PROJECT, REGION, TI, ctx

from airflow_batch_streaming import checker
from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.exceptions import PreflightFailedError
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.image import parse_image_uri
from airflow_batch_streaming.operators import BatchStreamingPreflightOperator
from airflow_batch_streaming.registry import REGISTRY_URL_ENV, RegistryClient
from airflow_batch_streaming.testing.registry import (
    CannedResponse,
    RecordedRequest,
    StaticRegistry,
    build_image,
    tar_layer,
)

pytestmark = pytest.mark.registry

TOKEN = "ya29.reliability-Tok3n-0123456789"
BEARER = "registry-issued-Bear3r-9876543210"
SECRETS = (TOKEN, BEARER, base64.b64encode(f"oauth2accesstoken:{TOKEN}".encode()).decode())
REPOSITORY = parse_image_uri(IMAGE).repository
MANIFEST = f"/v2/{REPOSITORY}/manifests/{parse_image_uri(IMAGE).reference}"
GOOD = build_image([tar_layer({"app/hello.txt": b"hello\n"})])
CONFIG = f"/v2/{REPOSITORY}/blobs/{next(iter(GOOD.blobs))}"
NO_HANG = 10.0  # seconds; every inspect is bounded by timeout=1


def echo_credentials(request: RecordedRequest) -> CannedResponse:
    """A 500 whose error text repeats everything the client sent (a badly behaved proxy)."""
    leaked = f"upstream said no to {request.headers.get('authorization', '')} ({TOKEN})"
    body = json.dumps({"errors": [{"code": "INTERNAL", "message": leaked}]}).encode()
    return CannedResponse(500, body, {"Content-Type": "application/json"})


def _serve_good(registry: StaticRegistry) -> None:
    registry.serve_built(REPOSITORY, parse_image_uri(IMAGE).reference, GOOD)


FAULTS: dict[str, tuple[Callable[[StaticRegistry], None], str, str]] = {
    # name: (set-up, finding code, text the message must contain)
    "http-500": (lambda r: r.serve_error(MANIFEST, 500), "registry-unreachable", "HTTP 500"),
    "http-503": (lambda r: r.serve_error(MANIFEST, 503, "UNAVAILABLE"), "registry-unreachable", "HTTP 503"),
    "http-500-echoing-the-credential": (
        lambda r: (r.require_basic(password=TOKEN), r.route(MANIFEST, echo_credentials)),
        "registry-unreachable",
        "HTTP 500",
    ),
    "hanging-connection": (lambda r: r.serve_hang(MANIFEST), "registry-unreachable", "within 1s"),
    "trickling-connection": (lambda r: r.serve_trickle(MANIFEST), "registry-unreachable", "within 1s"),
    "hang-on-the-config-blob": (
        lambda r: (_serve_good(r), r.serve_hang(CONFIG)),
        "registry-unreachable",
        "within 1s",
    ),
    "bad-json-manifest": (
        lambda r: r.serve_manifest(REPOSITORY, "1.0", b'{"schemaVersion": 2, "layers": [', GOOD.media_type),
        "manifest-invalid",
        "",
    ),
    "bad-json-config": (
        lambda r: (_serve_good(r), r.route(CONFIG, CannedResponse(200, b"{not json"))),
        "manifest-invalid",
        "",
    ),
    "bad-json-from-the-token-service": (
        lambda r: (
            r.require_bearer(token=BEARER, password=TOKEN),
            r.route("/token", CannedResponse(200, b"<html>sign in</html>")),
        ),
        "registry-auth-failed",
        "returned no token",
    ),
    "token-service-5xx": (
        lambda r: (r.require_bearer(token=BEARER, password=TOKEN), r.serve_error("/token", 503)),
        "registry-unreachable",
        "HTTP 503",
    ),
    "401-loop-bearer": (
        lambda r: (_serve_good(r), r.require_bearer(token=BEARER, password=TOKEN, accept_token=False)),
        "registry-auth-failed",
        "HTTP 401 after authenticating",
    ),
    "401-loop-basic": (
        lambda r: (_serve_good(r), r.require_basic(password="not-the-token")),
        "registry-auth-failed",
        "HTTP 401 after authenticating",
    ),
}


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"a credential leaked into: {str(text)[:300]}"


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_registry_fault_is_one_clear_finding_without_the_token(
    static_registry: StaticRegistry,
    fault: str,
    all_logs: Callable[[], list[str]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    set_up, code, mention = FAULTS[fault]
    set_up(static_registry)
    client = RegistryClient(base_url=static_registry.url, token_provider=lambda: TOKEN, timeout=1)
    started = time.monotonic()
    report = checker.check_image(IMAGE, REGION, project=PROJECT, registry=client)
    assert time.monotonic() - started < NO_HANG

    assert [finding.code for finding in report.errors] == [code]
    finding = report.errors[0]
    assert mention in finding.message and finding.hint
    assert len(static_registry.requests) <= 6  # no retry storm, no 401 loop
    failure = PreflightFailedError(report)
    out, err = capfd.readouterr()
    assert_no_secret(
        *(f.message for f in report.findings),
        *(f.hint for f in report.findings),
        report,
        json.dumps(report.to_dict()),
        report.format_text(),
        failure,
        failure.findings,
        client,
        out,
        err,
    )
    assert_no_secret(*all_logs())


@pytest.fixture
def preflight_env(
    emu: Emulator, static_registry: StaticRegistry, monkeypatch: pytest.MonkeyPatch
) -> StaticRegistry:
    """The preflight operator's own path: its hook's token (as on GCP) and the registry URL override."""
    monkeypatch.setattr(BatchStreamingHook, "registry_token", lambda self: TOKEN)
    monkeypatch.setenv(REGISTRY_URL_ENV, static_registry.url)
    return static_registry


@pytest.mark.emulator
@pytest.mark.parametrize("fault", ["http-500-echoing-the-credential", "401-loop-bearer", "bad-json-manifest"])
def test_the_preflight_task_fails_with_the_finding_and_no_token(
    preflight_env: StaticRegistry,
    fault: str,
    all_logs: Callable[[], list[str]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    set_up, code, _ = FAULTS[fault]
    set_up(preflight_env)
    ti = TI("preflight")
    started = time.monotonic()
    with pytest.raises(PreflightFailedError) as failed:
        BatchStreamingPreflightOperator(
            task_id="preflight", project_id=PROJECT, region=REGION, image_uri=IMAGE
        ).execute(ctx(ti))
    assert time.monotonic() - started < NO_HANG
    assert code in failed.value.report.codes()
    out, err = capfd.readouterr()
    assert_no_secret(failed.value, failed.value.findings, ti.xcoms, out, err)
    assert_no_secret(*all_logs())
