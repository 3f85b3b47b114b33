"""Development tooling for tests, the demo and benchmarks: never imported by production code.

A local CNCF distribution registry (:class:`LocalRegistry`), an in-memory image
builder and pusher over the OCI distribution API, and a canned-response registry
(:class:`StaticRegistry`) for the cases a real registry refuses to store.
"""

from __future__ import annotations

from airflow_batch_streaming.testing.registry import (
    EMPTY_LAYER_KINDS,
    REGISTRY_REFUSES,
    BuiltImage,
    CannedResponse,
    Layer,
    LocalRegistry,
    PushError,
    RecordedRequest,
    RegistryUnavailable,
    StaticRegistry,
    build_artifact,
    build_image,
    build_index,
    diff_id,
    duplicate_layer_image,
    empty_layer_image,
    local_registry,
    push_blob,
    push_built,
    push_duplicate_layer_image,
    push_empty_layer_image,
    push_image,
    push_index,
    push_manifest,
    random_layer,
    schema1_manifest,
    tar_layer,
)

__all__ = [
    "EMPTY_LAYER_KINDS",
    "REGISTRY_REFUSES",
    "BuiltImage",
    "CannedResponse",
    "Layer",
    "LocalRegistry",
    "PushError",
    "RecordedRequest",
    "RegistryUnavailable",
    "StaticRegistry",
    "build_artifact",
    "build_image",
    "build_index",
    "diff_id",
    "duplicate_layer_image",
    "empty_layer_image",
    "local_registry",
    "push_blob",
    "push_built",
    "push_duplicate_layer_image",
    "push_empty_layer_image",
    "push_image",
    "push_index",
    "push_manifest",
    "random_layer",
    "schema1_manifest",
    "tar_layer",
]
