"""Triggers the triggerer runs. Cheap to import: no Google client library, no grpc."""

from __future__ import annotations

from airflow_batch_streaming.triggers.batch import BatchJobStateTrigger

__all__ = ["BatchJobStateTrigger"]
