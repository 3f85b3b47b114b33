"""The client factories (emulator switch) and the emulator as a child process (the CLI)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from emulator_support import PARENT, PROJECT, container_job
from google.api_core.gapic_v1.client_info import ClientInfo
from google.auth.credentials import AnonymousCredentials
from google.cloud import batch_v1, service_usage_v1

from airflow_batch_streaming.emulator import Emulator, EmulatorProcess
from airflow_batch_streaming.emulator.cli import main as emulator_main
from airflow_batch_streaming.hooks import clients

pytestmark = pytest.mark.emulator


def test_emulator_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(clients.EMULATOR_HOST_ENV, raising=False)
    assert clients.emulator_host() is None
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, "  ")
    assert clients.emulator_host() is None
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, "localhost:8086")
    assert clients.emulator_host() == "localhost:8086"


def test_without_the_emulator_clients_go_to_google(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(clients.EMULATOR_HOST_ENV, raising=False)
    creds = AnonymousCredentials()
    sync = clients.batch_client(credentials=creds)
    assert sync.api_endpoint == "batch.googleapis.com"
    assert sync.transport._credentials is creds
    assert clients.logging_client(credentials=creds).api_endpoint == "logging.googleapis.com"
    assert clients.service_usage_client(credentials=creds).api_endpoint == "serviceusage.googleapis.com"


async def test_async_factories_need_credentials_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(clients.EMULATOR_HOST_ENV, raising=False)
    for factory in (
        clients.batch_async_client,
        clients.logging_async_client,
        clients.service_usage_async_client,
    ):
        with pytest.raises(ValueError, match="off the event loop"):
            factory()
    client = clients.batch_async_client(credentials=AnonymousCredentials())
    assert client.api_endpoint == "batch.googleapis.com"
    await client.transport.close()


def test_with_the_emulator_clients_use_an_insecure_channel(emulator: Emulator) -> None:
    info = ClientInfo(user_agent="airflow-batch-streaming/test")
    client = clients.batch_client(credentials=None, client_info=info)
    assert client.api_endpoint == emulator.target
    assert client.transport._credentials is None  # the channel carries no credentials
    assert client.get_job(name=client.create_job(parent=PARENT, job=container_job()).name)
    # Credentials given by a caller are not used either (no token is ever sent locally).
    assert clients.batch_client(credentials=AnonymousCredentials()).transport._credentials is None


def test_importing_the_factories_is_cheap() -> None:
    code = (
        "import sys, airflow_batch_streaming.hooks.clients; "
        "heavy = ('grpc', 'google.cloud.batch_v1', 'google.cloud.logging_v2'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_help() -> None:
    with pytest.raises(SystemExit) as info:
        emulator_main(["--help"])
    assert info.value.code == 0


def test_emulator_process(monkeypatch: pytest.MonkeyPatch) -> None:
    with EmulatorProcess(
        disabled_apis=["containerfilesystem.googleapis.com"], extra_args=["--run-seconds", "0.1"]
    ) as emu:
        assert emu.port and emu.admin_port and emu.env() == {clients.EMULATOR_HOST_ENV: emu.target}
        monkeypatch.setenv(*emu.env().popitem())
        name = f"projects/{PROJECT}/services/containerfilesystem.googleapis.com"
        state = clients.service_usage_client().get_service(request={"name": name}).state
        assert state == service_usage_v1.State.DISABLED
        job = clients.batch_client().create_job(parent=PARENT, job=container_job())
        assert job.status.state == batch_v1.JobStatus.State.QUEUED
        assert emu.stats()["calls"] == {"CreateJob": 1, "GetService": 1}
        proc = emu.proc
    assert proc is not None and proc.returncode == 0  # SIGTERM is a clean stop
