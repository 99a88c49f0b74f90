"""``nexmdm apk``: add copies and fingerprints the file; list; the download audit trail."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from tests.support.cli import Cli, one_error_line, seed_download
from tests.support.fakes.apk import apk_bytes as manifest_apk


def apk_bytes(content: bytes = b"fake agent build" * 64, manifest: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if manifest:
            archive.writestr("AndroidManifest.xml", "<manifest/>")
        archive.writestr("classes.dex", content)
    return buffer.getvalue()


APK = apk_bytes()


def test_add_and_list(cli: Cli, tmp_path: Path, engine) -> None:
    source = tmp_path / "agent.apk"
    source.write_bytes(APK)
    data = cli.json("apk", "add", str(source), "--version-code", "42", "--version-name", "4.2.0")
    assert data["version_code"] == 42 and data["version_name"] == "4.2.0"
    assert data["size_bytes"] == len(APK) and data["sha256"] == hashlib.sha256(APK).hexdigest()
    if engine.dialect.name == "sqlite":  # one node: the APK folder
        stored = Path(cli.env["NEXMDM_DATA_DIR"]) / "apks" / data["filename"]
        assert stored.read_bytes() == APK
    else:  # every node can serve it: the bytes are in the database
        with engine.connect() as conn:
            chunks = conn.execute(
                text("SELECT data FROM apk_chunks WHERE sha256 = :s ORDER BY seq"), {"s": data["sha256"]}
            )
            assert b"".join(bytes(row[0]) for row in chunks) == APK
        assert not (Path(cli.env["NEXMDM_DATA_DIR"]) / "apks" / data["filename"]).exists()

    source.write_bytes(apk_bytes(b"v43"))
    table_add = cli("apk", "add", str(source), "--version-code", "43", "--version-name", "4.3.0")
    assert table_add.exit_code == 0, table_add.stderr
    assert "sha256" in table_add.stdout

    assert [b["version_code"] for b in cli.json("apk", "list")["items"]] == [43, 42]
    listed = cli("apk", "list")
    assert "4.3.0" in listed.stdout and "4.2.0" in listed.stdout


def test_add_errors(cli: Cli, tmp_path: Path) -> None:
    missing = cli("apk", "add", str(tmp_path / "none.apk"), "--version-code", "1", "--version-name", "1")
    assert missing.exit_code == 2
    assert "none.apk" in one_error_line(missing)
    text = tmp_path / "notes.txt"
    text.write_text("not a zip")
    not_apk = cli("apk", "add", str(text), "--version-code", "1", "--version-name", "1")
    assert not_apk.exit_code == 2
    assert "not an APK" in one_error_line(not_apk)
    # issue #11 item 11: ZIP magic alone (even the one byte "P") is not an APK; the manifest is required
    for name, content in (
        ("p.apk", b"P"),
        ("magic.apk", b"PK\x03\x04 nothing else"),
        ("zip.apk", apk_bytes(manifest=False)),
    ):
        fake = tmp_path / name
        fake.write_bytes(content)
        refused = cli("apk", "add", str(fake), "--version-code", "2", "--version-name", "2")
        assert refused.exit_code == 2, (name, refused.stderr)
        assert "not an APK" in one_error_line(refused)
    data = Path(cli.env["NEXMDM_DATA_DIR"])  # uploads are staged in apks/ (folder) or apk-cache/ (database)
    assert [p for folder in ("apks", "apk-cache") if (data / folder).exists() for p in (data / folder).iterdir()] == []
    good = tmp_path / "a.apk"
    good.write_bytes(APK)
    assert cli("apk", "add", str(good), "--version-code", "7", "--version-name", "7").exit_code == 0
    again = cli("apk", "add", str(good), "--version-code", "7", "--version-name", "7")
    assert again.exit_code == 4
    assert "version code 7" in one_error_line(again)


def test_add_reads_the_manifests_package(cli: Cli, tmp_path: Path) -> None:
    real = tmp_path / "pos.apk"
    real.write_bytes(manifest_apk(package="com.acme.pos", version_code=4200))
    refused = cli("apk", "add", str(real), "--version-code", "4201", "--version-name", "42.0")
    assert refused.exit_code == 2 and "versionCode 4200" in one_error_line(refused)
    assert cli.json("apk", "list")["items"] == []
    added = cli.json("apk", "add", str(real), "--version-code", "4200", "--version-name", "42.0")
    assert added["package"] == "com.acme.pos"
    listed = cli("apk", "list")
    assert listed.exit_code == 0 and "com.acme.pos" in listed.stdout


def test_downloads(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    assert "No downloads yet." in cli("apk", "downloads").stdout
    seed_download(session_factory, ago=timedelta(days=3))
    seed_download(session_factory, ago=timedelta(minutes=5))
    items = cli.json("apk", "downloads")["items"]
    assert len(items) == 2 and items[0]["ip"] == "10.0.0.7" and items[0]["source"] == "manual"
    assert len(cli.json("apk", "downloads", "--since", "1h")["items"]) == 1
    assert len(cli.json("apk", "downloads", "--limit", "1")["items"]) == 1
    table = cli("apk", "downloads")
    assert "5m ago" in table.stdout and "10.0.0.7" in table.stdout and "1.1 (1)" in table.stdout
    bad = cli("apk", "downloads", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "--since" in one_error_line(bad)


def test_remove_withdraws_a_bad_latest(cli: Cli, tmp_path: Path) -> None:
    for code in (1, 2):
        source = tmp_path / f"{code}.apk"
        source.write_bytes(apk_bytes(b"build %d" % code))
        cli.json("apk", "add", str(source), "--version-code", str(code), "--version-name", f"{code}.0")
    bad = cli.json("apk", "list")["items"][0]
    assert bad["version_code"] == 2 and bad["removed_at"] is None
    asked = cli("apk", "remove", str(bad["id"]), input="n\n")
    assert asked.exit_code == 1 and cli.json("apk", "list")["items"][0]["removed_at"] is None
    removed = cli.json("apk", "remove", str(bad["id"]), "--yes")
    assert removed["removed_at"] is not None
    listed = cli.json("apk", "list")["items"]
    assert [(b["version_code"], b["removed_at"] is not None) for b in listed] == [(2, True), (1, False)]
    again = cli("apk", "remove", str(bad["id"]), "--yes")
    assert again.exit_code == 3 and "was removed" in one_error_line(again)
    missing = cli("apk", "remove", "999", "--yes")
    assert missing.exit_code == 3 and "no APK build 999" in one_error_line(missing)
