"""`airflow-batch-streaming fix`: write a streamable copy of an image where the job runs.

    airflow-batch-streaming fix SOURCE --to TARGET --location REGION [--platform P]
        [--dry-run] [--json] [--source-registry-url URL] [--target-registry-url URL]

Exit status: 0 the written image streams; 1 it cannot be made to (the output says why);
2 bad input, reported before anything is written. Credentials: Artifact Registry with
Application Default Credentials (user ``oauth2accesstoken``); any registry with the
``auths`` of a Docker config file (``$DOCKER_CONFIG/config.json``, ``~/.docker/config.json``
or ``--docker-config``); otherwise anonymous. No secret is ever printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from airflow_batch_streaming.preflight_cli import AdcCredentials, _Parser

PROG = "airflow-batch-streaming fix"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Copy an image into Artifact Registry where the job runs and rewrite only what Image "
        "Streaming refuses (empty and duplicate layers), keeping the container's files identical.",
        epilog="Exit status: 0 the result streams, 1 it cannot be made to stream, 2 bad input.",
    )
    parser.add_argument("source", metavar="SOURCE", help="any image reference (tag or digest)")
    parser.add_argument(
        "--to",
        required=True,
        metavar="TARGET",
        help="LOCATION-docker.pkg.dev/PROJECT/REPO[/NAME[:TAG]]; a tag is pointed at the result",
    )
    parser.add_argument("--location", required=True, metavar="REGION", help="the region the job's VMs run in")
    parser.add_argument("--platform", metavar="OS/ARCH", help="fix only this platform of an index")
    parser.add_argument("--dry-run", action="store_true", help="read and report; write nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--source-registry-url", metavar="URL", help="read SOURCE's host from this URL")
    parser.add_argument("--target-registry-url", metavar="URL", help="write TARGET's host to this URL")
    parser.add_argument("--docker-config", metavar="PATH", help="a Docker config.json with registry auths")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from airflow_batch_streaming import doctor
    from airflow_batch_streaming.registry import RegistryError

    adc = AdcCredentials()
    try:
        source = _client(args.source, args.source_registry_url, args.docker_config, adc)
        target = _client(args.to, args.target_registry_url, args.docker_config, adc)
        result = doctor.fix_image(
            args.source,
            args.to,
            args.location,
            platform=args.platform,
            dry_run=args.dry_run,
            source_client=source,
            target_client=target,
        )
    except doctor.FixError as exc:
        return _fail(args, exc.to_dict(), exc.exit_code)
    except RegistryError as exc:
        return _fail(args, {"code": exc.code, "message": exc.message, "hint": exc.hint}, 1)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    sys.stdout.write((json.dumps(result.to_dict()) if args.json else result.format_text()) + "\n")
    return result.exit_code


def _fail(args: argparse.Namespace, error: dict[str, str], code: int) -> int:
    if args.json:
        out = {
            "source": args.source,
            "target": None,
            "ok": False,
            "changes": [],
            "preflight": None,
            "error": error,
        }
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        hint = f"\n  hint: {error['hint']}" if error.get("hint") else ""
        sys.stderr.write(f"{PROG}: {error['code']}: {error['message']}{hint}\n")
    return code


def _client(uri: str, url: str | None, docker_config: str | None, adc: AdcCredentials) -> Any:
    """A writer for ``uri``'s registry, with the first credentials that apply."""
    from airflow_batch_streaming import doctor
    from airflow_batch_streaming.image import ImageReferenceError, parse_image_uri
    from airflow_batch_streaming.registry import RegistryError
    from airflow_batch_streaming.registry_push import RegistryWriter, docker_config_auth

    try:
        ref = parse_image_uri(uri)
    except ImageReferenceError:
        ref = None  # reported by fix_image, with its hint
    hosts = [urllib.parse.urlsplit(url).netloc] if url else []
    hosts += [ref.host] if ref is not None else []
    creds = next((c for h in hosts if (c := docker_config_auth(h, docker_config)) is not None), None)
    try:
        if creds is not None:
            user, secret = creds
            return RegistryWriter(username=user, token_provider=lambda: secret, base_url=url)
        if ref is not None and ref.is_artifact_registry:
            return RegistryWriter(token_provider=adc.token, base_url=url)
        return RegistryWriter(base_url=url)
    except RegistryError as exc:  # a malformed --*-registry-url
        raise doctor.FixError("invalid-registry-url", exc.message, exc.hint, exit_code=2) from None
