"""The only code that talks to Google APIs.

`BatchStreamingHook` is exported lazily: importing this package stays cheap (no grpc, no
Google client library), which matters because operator modules are imported by every
DAG parse. The hook's own module imports the Google provider's `GoogleBaseHook` (and
through it `grpc`), so import it where it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_batch_streaming.hooks import clients as clients
    from airflow_batch_streaming.hooks.batch import BatchStreamingHook

__all__ = ["BatchStreamingHook"]


def __getattr__(name: str) -> Any:
    if name == "BatchStreamingHook":
        from airflow_batch_streaming.hooks.batch import BatchStreamingHook

        return BatchStreamingHook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
