"""Provider metadata that every Airflow component loads at start-up.

Kept free of imports beyond the package version: the scheduler, triggerer,
API server and every worker call this on discovery.
"""

from __future__ import annotations

from typing import Any

from airflow_batch_streaming import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-batch-streaming",
        "name": "Google Cloud Batch Image Streaming",
        "description": "Run Google Cloud Batch container jobs with Image Streaming, checked before submission.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Google Cloud Batch (Image Streaming)",
                "external-doc-url": "https://cloud.google.com/batch/docs/use-image-streaming",
                "tags": ["gcp"],
            }
        ],
        "operators": [
            {
                "integration-name": "Google Cloud Batch (Image Streaming)",
                "python-modules": ["airflow_batch_streaming.operators"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Google Cloud Batch (Image Streaming)",
                "python-modules": ["airflow_batch_streaming.sensors"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Google Cloud Batch (Image Streaming)",
                "python-modules": ["airflow_batch_streaming.hooks"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Google Cloud Batch (Image Streaming)",
                "python-modules": ["airflow_batch_streaming.triggers"],
            }
        ],
        "extra-links": [
            "airflow_batch_streaming.links.BatchJobConsoleLink",
            "airflow_batch_streaming.links.BatchJobLogsLink",
        ],
    }
