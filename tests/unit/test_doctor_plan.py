"""The pure part of `fix`: when dropping a repeated layer is safe, the plan, the config, the repack."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from airflow_batch_streaming import doctor
from airflow_batch_streaming.doctor import Entry, LayerAction, conflict, plan_layers, rewrite_config
from airflow_batch_streaming.oci import Layer, ManifestInfo
from airflow_batch_streaming.testing.registry import EMPTY_TAR_DIGEST, GZIPPED_EMPTY_TAR_DIGEST
from airflow_batch_streaming.testing.token_registry import TarEntry, apply_layers, layer_of

REPEAT = [Entry("etc", "dir", 0o755), Entry("etc/a.txt", "file", 0o644)]


@pytest.mark.parametrize(
    ("between", "unsafe"),
    [
        ([Entry("etc", "dir", 0o755), Entry("etc/b.txt", "file")], False),  # same dir, another file
        ([Entry("opt/x", "file")], False),  # elsewhere
        ([Entry("etc/a.txt", "whiteout")], True),  # deletes the file
        ([Entry("etc/a.txt", "file", 0o600)], True),  # changes it
        ([Entry("etc", "dir", 0o700)], True),  # changes the directory the repeat sets
        ([Entry("etc", "whiteout")], True),  # deletes its directory
        ([Entry("etc", "opaque")], True),  # hides its directory's content
        ([Entry("etc", "symlink", link="/usr/etc")], True),  # replaces the directory by a link
    ],
)
def test_conflict(between: list[Entry], unsafe: bool) -> None:
    assert (conflict(REPEAT, between) is not None) is unsafe


def test_conflict_with_whiteouts_in_the_repeat() -> None:
    repeat = [Entry("var/cache", "opaque"), Entry("tmp/x", "whiteout")]
    assert conflict(repeat, [Entry("var/cache/new", "file")]) is not None  # reapplying hides it again
    assert conflict(repeat, [Entry("tmp/x/y", "file")]) is not None  # reapplying deletes it again
    assert conflict(repeat, [Entry("tmp/x", "file")]) is not None
    assert conflict(repeat, [Entry("srv/z", "file")]) is None


def test_conflict_through_a_hardlink_target() -> None:
    repeat = [Entry("bin/a", "file"), Entry("bin/b", "hardlink", link="bin/a")]
    assert conflict(repeat, [Entry("bin/a", "file", 0o755)]) is not None


def test_plan_drops_or_rewrites_from_the_last_copy() -> None:
    asked: list[tuple[int, int]] = []

    def find(previous: int, i: int) -> str | None:
        asked.append((previous, i))
        return "layer 2 changes etc/a.txt" if (previous, i) == (0, 3) else None

    actions = plan_layers(6, {1}, {3: 0, 5: 0}, find)
    assert [a.action for a in actions] == ["keep", "drop-empty", "keep", "rewrite", "keep", "drop-duplicate"]
    assert asked == [(0, 3), (3, 5)]
    assert actions[3].padding_blocks == 1 and actions[5].of == 3


def test_rewrite_config_keeps_diff_ids_and_history_consistent() -> None:
    config = {
        "rootfs": {"type": "layers", "diff_ids": ["sha256:a", "sha256:e", "sha256:a"]},
        "history": [
            {"created_by": "ENV X=1", "empty_layer": True},
            {"created_by": "COPY a"},
            {"created_by": "RUN true"},
            {"created_by": "COPY a again"},
        ],
        "config": {"Env": ["X=1"]},
    }
    actions = [LayerAction(0, "keep"), LayerAction(1, "drop-empty"), LayerAction(2, "rewrite", 0, 1)]
    new, matched = rewrite_config(config, actions, ["sha256:a", "sha256:e", "sha256:a2"])
    assert matched
    assert new["rootfs"]["diff_ids"] == ["sha256:a", "sha256:a2"]
    assert [bool(h.get("empty_layer")) for h in new["history"]] == [True, False, True, False]
    assert (
        new["config"] == config["config"] and config["rootfs"]["diff_ids"][2] == "sha256:a"
    )  # input untouched


def test_preflight_defects_use_the_preflight_rules() -> None:
    layers = (
        Layer("sha256:" + "1" * 64, 100, "x"),
        Layer(GZIPPED_EMPTY_TAR_DIGEST, 32, "x"),
        Layer("sha256:" + "2" * 64, 0, "x"),
        Layer("sha256:" + "1" * 64, 100, "x"),
        Layer("sha256:" + "3" * 64, 90, "x"),
        Layer("sha256:" + "4" * 64, 120, "x"),  # read: an empty archive by content
        Layer("sha256:" + "5" * 64, 130, "x"),  # read: not a tar the rule understands
    )
    diff_ids = (
        "sha256:d1",
        EMPTY_TAR_DIGEST,
        "sha256:d2",
        "sha256:d1",
        "sha256:d1",
        "sha256:d4",
        "sha256:d5",
    )
    contents = {layers[5].digest: True, layers[6].digest: None}
    empty, duplicates = doctor._preflight_defects(
        ManifestInfo("sha256:m", "t", 2, layers, diff_ids, None, None), contents
    )
    assert empty == {1, 2, 5}
    assert duplicates == {3: 0, 4: 0}  # same digest; same diff_id under another compression


@pytest.mark.parametrize("gzipped", [True, False])
def test_repack_changes_digests_but_not_files(gzipped: bool) -> None:
    original = layer_of(
        [
            TarEntry("etc", "dir", mode=0o755),
            ("etc/a.txt", b"a\n"),
            TarEntry("etc/link", "symlink", link="a.txt"),
            ("etc/.wh.gone", b""),
        ],
        gzipped=gzipped,
    )
    spool, digest, diff = doctor.repack(io.BytesIO(original), 2)
    spool.seek(0)
    repacked = spool.read()
    assert repacked != original and (repacked[:2] == b"\x1f\x8b") is gzipped
    assert apply_layers([repacked]) == apply_layers([original])
    assert doctor.tar_entries(io.BytesIO(repacked)) == doctor.tar_entries(io.BytesIO(original))
    again = doctor.repack(io.BytesIO(original), 2)
    assert (again[1], again[2]) == (digest, diff)  # deterministic: a second run finds it written


def test_zstd_layer_cannot_be_read() -> None:
    with pytest.raises(doctor.FixError, match="zstd"):
        doctor.tar_entries(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 100))


def test_docker_config_auth(tmp_path: Path) -> None:
    import base64
    import json

    from airflow_batch_streaming.registry_push import docker_config_auth

    path = tmp_path / "config.json"
    encoded = base64.b64encode(b"me:p4ss:word").decode()
    auths = {
        "https://index.docker.io/v1/": {"auth": encoded},
        "ghcr.io": {"username": "u", "password": "tok"},
        "quay.io": {"auth": "%%%"},
    }
    path.write_text(json.dumps({"auths": auths, "credsStore": "desktop"}))
    assert docker_config_auth("docker.io", str(path)) == ("me", "p4ss:word")
    assert docker_config_auth("ghcr.io", str(path)) == ("u", "tok")
    assert docker_config_auth("quay.io", str(path)) is None
    assert docker_config_auth("gcr.io", str(path)) is None
    assert docker_config_auth("ghcr.io", str(path) + ".missing") is None
