"""Operators for Image Streaming Batch jobs: preflight, submit-and-wait, logs.

Importing this package is cheap: no Google client library and no grpc (DAG files import
it on every parse); the hook and the trigger are imported when a task runs.
"""

from __future__ import annotations

from airflow_batch_streaming.operators.fix import BatchStreamingImageFixOperator
from airflow_batch_streaming.operators.job import BatchStreamingJobOperator
from airflow_batch_streaming.operators.logs import BatchJobLogsOperator
from airflow_batch_streaming.operators.preflight import BatchStreamingPreflightOperator

__all__ = [
    "BatchJobLogsOperator",
    "BatchStreamingImageFixOperator",
    "BatchStreamingJobOperator",
    "BatchStreamingPreflightOperator",
]
