"""Provider metadata that every Airflow component loads at start-up.

Kept free of imports: the scheduler, triggerer, API server and every worker call this on
discovery. Its keys follow ``airflow/provider_info.schema.json``, the schema Airflow validates
this dict against (tests/airflow/test_provider.py checks it strictly, on every Airflow of the
matrix); the version comes from the distribution's metadata, as for Airflow's own providers.
"""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-batch-streaming",
        "name": "Google Cloud Batch Image Streaming",
        "description": "Google Cloud Batch jobs with Image Streaming, checked before submission.",
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
        "config": {
            "batch_streaming": {
                "description": "Waiting on Google Cloud Batch jobs from the triggerer.",
                "options": {
                    "read_budget_per_minute": {
                        "description": "Batch read calls (GetJob, ListJobs) per minute that one "
                        "triggerer process may spend on waiting. Batch allows 15,000 per region "
                        "and project, shared by every client; the default leaves half for others. "
                        "The environment variable BATCH_STREAMING_READ_BUDGET overrides it.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "3000",
                        "default": "7500",
                    },
                    "notification_topic": {
                        "description": "Pub/Sub topic (projects/P/topics/T) that Batch jobs publish "
                        "their state changes to and the triggerer listens on, so a finished job is "
                        "read within about a second instead of at the next poll. Empty: polling only. "
                        "The environment variable BATCH_STREAMING_NOTIFICATION_TOPIC overrides it.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "projects/my-project/topics/batch-job-events",
                        "default": "",
                    },
                },
            }
        },
        "extra-links": [
            "airflow_batch_streaming.links.BatchJobConsoleLink",
            "airflow_batch_streaming.links.BatchJobLogsLink",
        ],
    }
