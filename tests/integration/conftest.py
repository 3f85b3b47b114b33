"""Integration fixtures: real processes and servers on loopback only."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from airflow_batch_streaming.registry import clear_cache
from airflow_batch_streaming.testing.registry import LocalRegistry, StaticRegistry


def _start_registry(password: str | None = None) -> LocalRegistry:
    # A missing docker-registry is a failure, not a skip: `make test` installs it.
    return LocalRegistry(password=password).start()


@pytest.fixture(scope="session")
def local_registry() -> Iterator[LocalRegistry]:
    """The CNCF distribution registry on 127.0.0.1, anonymous, shared by the session."""
    registry = _start_registry()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[LocalRegistry]:
    """The same behind htpasswd Basic auth: user oauth2accesstoken, password = `.password`."""
    registry = _start_registry(password=f"ya29.test-{secrets.token_urlsafe(24)}")
    yield registry
    registry.stop()


@pytest.fixture
def static_registry() -> Iterator[StaticRegistry]:
    """Canned registry answers (schema 1, 5xx, hangs, Bearer realm), fresh for each test."""
    with StaticRegistry() as registry:
        yield registry


@pytest.fixture
def fresh_registry_cache() -> Iterator[None]:
    """Forget process-wide manifest results, so request counts are the test's own."""
    clear_cache()
    yield
    clear_cache()
