"""Sensors for Batch jobs. Cheap to import: no Google client library, no grpc."""

from __future__ import annotations

from airflow_batch_streaming.sensors.job_state import BatchJobStateSensor

__all__ = ["BatchJobStateSensor"]
