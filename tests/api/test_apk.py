"""APK: metadata, downloads with Range/If-Range and their audit rows, uploads."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from core.models import ApkBuild, ApkDownloadEvent
from core.storage.types import utcnow
from tests.support.fakes.apk import apk_bytes as fake_apk


def apk_bytes(payload: bytes = bytes(range(256)) * 40, manifest: bool = True) -> bytes:
    """A ZIP archive that passes for an APK (``AndroidManifest.xml`` inside), stored uncompressed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        if manifest:
            archive.writestr("AndroidManifest.xml", "<manifest/>")
        archive.writestr("classes.dex", payload)
    return buffer.getvalue()


APK = apk_bytes()
APK_TYPE = "application/vnd.android.package-archive"


def events(session_factory) -> list[tuple[str, str | None]]:
    with session_factory() as db:
        return [
            (e.source, e.token_id) for e in db.execute(select(ApkDownloadEvent).order_by(ApkDownloadEvent.id)).scalars()
        ]


@pytest.fixture
def uploaded(client, admin) -> dict:
    response = client.post(
        "/v1/apk/builds",
        files={"file": ("agent.apk", io.BytesIO(APK), "application/vnd.android.package-archive")},
        data={"version_code": "42", "version_name": "4.2.0"},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_no_build_is_404(client, admin) -> None:
    assert client.get("/v1/apk/latest", headers=admin).status_code == 404
    assert client.get("/v1/apk/download/latest", headers=admin).status_code == 404


def test_upload_metadata_and_errors(client, admin, uploaded, enroll, auth) -> None:
    assert uploaded["sha256"] == hashlib.sha256(APK).hexdigest() and uploaded["size_bytes"] == len(APK)
    latest = client.get("/v1/apk/latest", headers=auth(enroll("dev_001")))
    assert latest.status_code == 200 and latest.json()["version_code"] == 42
    assert latest.json()["download_url"].endswith(f"/v1/apk/download/{uploaded['id']}")

    def upload(content: bytes, code: str, headers=admin):
        return client.post(
            "/v1/apk/builds",
            files={"file": ("a.apk", io.BytesIO(content))},
            data={"version_code": code, "version_name": "x"},
            headers=headers,
        )

    assert upload(APK, "42").status_code == 409
    assert upload(b"not a zip", "43").status_code == 422
    assert upload(APK, "zero").status_code == 422
    assert upload(APK, "44", headers={}).status_code == 401
    assert client.post("/v1/apk/builds", json={"version_code": 1}, headers=admin).status_code == 415


def test_downloads_audit_and_ranges(client, admin, uploaded, enroll, auth, make_token, session_factory) -> None:
    device = enroll("dev_001")
    etag = f'"{uploaded["sha256"]}"'
    full = client.get("/v1/apk/download/latest", headers=auth(device))
    assert full.status_code == 200 and full.content == APK
    assert full.headers["content-type"] == "application/vnd.android.package-archive"
    assert full.headers["etag"] == etag and full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-length"] == str(len(APK))
    assert events(session_factory) == [("update", "dev_001")]

    first = client.get("/v1/apk/download/latest", headers=auth(device) | {"Range": "bytes=0-999"})
    assert first.status_code == 206 and first.content == APK[:1000]
    assert first.headers["content-range"] == f"bytes 0-999/{len(APK)}"
    rest = client.get(
        f"/v1/apk/download/{uploaded['id']}", headers=auth(device) | {"Range": "bytes=1000-", "If-Range": etag}
    )
    assert rest.status_code == 206 and first.content + rest.content == APK
    suffix = client.get("/v1/apk/download/latest", headers=auth(device) | {"Range": "bytes=-10"})
    assert suffix.status_code == 206 and suffix.content == APK[-10:]
    assert len(events(session_factory)) == 1  # one download session of one credential and build

    stale = client.get("/v1/apk/download/latest", headers=auth(device) | {"Range": "bytes=1000-", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == APK
    beyond = client.get("/v1/apk/download/latest", headers=auth(device) | {"Range": f"bytes={len(APK)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(APK)}"
    assert len(events(session_factory)) == 1

    token = make_token(uses=1)
    assert client.get("/v1/apk/download/latest", headers=auth(token)).status_code == 200
    assert client.get("/v1/apk/download/latest", headers=admin, params={"source": "ci"}).status_code == 200
    assert client.get("/v1/apk/download/latest", headers=admin, params={"source": "bogus"}).status_code == 422
    sources = [source for source, _ in events(session_factory)]
    assert sources[-2:] == ["enrollment", "ci"]
    assert client.get("/v1/apk/download/999", headers=admin).status_code == 404
    assert client.get("/v1/apk/download/latest").status_code == 401


def test_uploads_have_their_own_body_limit(api_settings, engine, admin_key) -> None:
    from litestar.testing import TestClient

    from nexmdm_api import create_app

    settings = api_settings.with_overrides(apk_upload_max_mb=1)
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {admin_key}"}
        big = apk_bytes(b"\0" * (1024 * 1024 + 10))
        response = client.post(
            "/v1/apk/builds",
            files={"file": ("a.apk", io.BytesIO(big))},
            data={"version_code": "1", "version_name": "1"},
            headers=headers,
        )
        assert response.status_code == 413
        small = apk_bytes(b"\0" * (200 * 1024))  # over the 64 KiB of other endpoints, under this limit
        response = client.post(
            "/v1/apk/builds",
            files={"file": ("a.apk", io.BytesIO(small))},
            data={"version_code": "2", "version_name": "2"},
            headers=headers,
        )
        assert response.status_code == 201, response.text


def test_a_download_is_audited_whatever_its_first_range(client, admin, uploaded, enroll, auth, session_factory) -> None:
    """Issue #11 item 5: a download that started at byte 1 was never audited (every APK starts with "P")."""
    device = enroll("dev_sneaky")
    skip_first = client.get("/v1/apk/download/latest", headers=auth(device) | {"Range": "bytes=1-"})
    assert skip_first.status_code == 206 and skip_first.content == APK[1:]
    assert events(session_factory) == [("update", "dev_sneaky")]
    # the rest of that session adds nothing; the next session (an hour later) is a new event
    assert client.get("/v1/apk/download/latest", headers=auth(device) | {"Range": "bytes=0-0"}).status_code == 206
    assert len(events(session_factory)) == 1
    with session_factory.begin() as db:
        db.execute(update(ApkDownloadEvent).values(created_at=utcnow() - timedelta(hours=1, seconds=1)))
    assert client.get("/v1/apk/download/latest", headers=auth(device) | {"Range": "bytes=5-"}).status_code == 206
    assert len(events(session_factory)) == 2


def test_download_url_never_comes_from_the_host_header(api_settings, engine, admin_key, uploaded) -> None:
    """Issue #11 item 12: `Host: evil.example` came back as `http://evil.example:443/...` in download_url."""
    from litestar.testing import TestClient

    from nexmdm_api import create_app

    headers = {"Authorization": f"Bearer {admin_key}", "Host": "evil.example"}
    for public, expected in (
        ("", "/v1/apk/download/"),
        ("https://mdm.example.com/api/", "https://mdm.example.com/api/v1/apk/download/"),
    ):
        with TestClient(create_app(api_settings.with_overrides(public_url=public))) as client:
            url = client.get("/v1/apk/latest", headers=headers).json()["download_url"]
        assert url == f"{expected}{uploaded['id']}"


@pytest.mark.parametrize("bad", ["mdm.example.com", "ftp://mdm.example.com", "https://x?y=1", "https://x#f"])
def test_public_url_must_be_an_http_base(api_settings, bad: str) -> None:
    from core.base.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="NEXMDM_PUBLIC_URL"):
        api_settings.with_overrides(public_url=bad)


def test_remove_withdraws_a_build_through_the_api(client, admin, uploaded, enroll, auth) -> None:
    newer = client.post(
        "/v1/apk/builds",
        files={"file": ("bad.apk", io.BytesIO(apk_bytes(b"bad")), APK_TYPE)},
        data={"version_code": "43", "version_name": "4.3.0-bad"},
        headers=admin,
    ).json()
    device = auth(enroll("dev_upd"))
    assert client.get("/v1/apk/latest", headers=device).json()["version_code"] == 43
    assert client.delete(f"/v1/apk/builds/{newer['id']}", headers=device).status_code == 401
    removed = client.delete(f"/v1/apk/builds/{newer['id']}", headers=admin)
    assert removed.status_code == 200 and removed.json()["version_code"] == 43 and removed.json()["removed_at"]
    assert client.delete(f"/v1/apk/builds/{newer['id']}", headers=admin).status_code == 200  # again: no change
    assert client.get("/v1/apk/latest", headers=device).json()["version_code"] == 42
    gone = client.get(f"/v1/apk/download/{newer['id']}", headers=device)
    assert gone.status_code == 404 and "was removed" in gone.json()["detail"]
    assert client.delete("/v1/apk/builds/999", headers=admin).status_code == 404


def test_an_upload_records_the_admin_keys_use(uploaded, session_factory) -> None:
    """The key is checked in a read-only session before the body is read; its use is still recorded."""
    from core.access import keys as admin_keys

    with session_factory() as db:
        assert [key["last_used_at"] is not None for key in admin_keys.list_admin_keys(db)] == [True]


def test_admins_list_builds_and_downloads(client, admin, uploaded, enroll, auth) -> None:
    builds = client.get("/v1/apk/builds", headers=admin).json()
    assert [b["version_code"] for b in builds["items"]] == [42] and builds["next_cursor"] is None
    assert builds["items"][0]["download_url"].endswith(f"/v1/apk/download/{uploaded['id']}")
    for device in ("dev_a", "dev_b", "dev_c"):  # one audited download session each
        assert client.get("/v1/apk/download/latest", headers=auth(enroll(device))).status_code == 200
    first = client.get("/v1/apk/downloads", params={"limit": 2}, headers=admin).json()
    assert [d["source"] for d in first["items"]] == ["update", "update"] and first["next_cursor"]
    rest = client.get("/v1/apk/downloads", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None


def test_an_upload_records_the_package_its_manifest_declares(client, admin, uploaded, session_factory) -> None:
    real = fake_apk(package="com.acme.pos", version_code=4200)

    def upload(code: str):
        return client.post(
            "/v1/apk/builds",
            files={"file": ("pos.apk", io.BytesIO(real), APK_TYPE)},
            data={"version_code": code, "version_name": "42.0"},
            headers=admin,
        )

    refused = upload("4201")  # the form says another version than the manifest: nothing is written
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "version_code"
    assert "versionCode 4200" in refused.json()["detail"]
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(ApkBuild)) == 1
    created = upload("4200")
    assert created.status_code == 201 and created.json()["package"] == "com.acme.pos"
    builds = {b["version_code"]: b["package"] for b in client.get("/v1/apk/builds", headers=admin).json()["items"]}
    assert builds == {4200: "com.acme.pos", 42: None}  # a text stand-in's manifest cannot be read
