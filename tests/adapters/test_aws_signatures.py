"""ClamAV databases on AWS: freshclam → signature bucket (moto), bucket → a real clamd.

freshclam cannot reach the ClamAV mirrors from here, so the update runs a test-only stand-in
named `freshclam`, put first on PATH by this test: it reads the generated freshclam.conf and
writes small databases with real CVD headers. Production never sees it (the image's
/usr/bin/freshclam is what MAILMOAT_FRESHCLAM_PATH=freshclam finds there)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters.aws_signatures import MANIFEST, S3SignatureMirror
from mailmoat.adapters.clamd import ClamdAntivirus
from mailmoat.aws.signatures import (
    ClamdProcess,
    SignatureUpdateFailed,
    database_version,
    fetch_signatures,
    update_signatures,
)
from tests.conftest import use_aws_test_credentials

BUCKET = "mailmoat-test-signatures"

FAKE_FRESHCLAM = textwrap.dedent('''\
    #!{python}
    """Test stand-in for freshclam: FAKE_FRESHCLAM_DAILY is the daily version to leave behind."""
    import os, sys
    config = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config-file="))
    text = open(config).read()
    open(os.environ["FAKE_FRESHCLAM_SEEN"], "a").write(text + "\\n----\\n")
    settings = dict(line.split(" ", 1) for line in text.splitlines() if line)
    db = settings["DatabaseDirectory"]
    if os.environ.get("FAKE_FRESHCLAM_EXIT"):
        print("ERROR: Can't download daily.cvd from database.clamav.net")
        sys.exit(int(os.environ["FAKE_FRESHCLAM_EXIT"]))
    state = os.path.join(db, "freshclam.dat")
    runs = int(open(state).read()) + 1 if os.path.exists(state) else 1
    open(state, "w").write(str(runs))
    def write(name, version, body):
        header = "ClamAV-VDB:27 Nov 2026 08-00 +0000:%d:1000:90:md5:sig:builder:1796200000" % version
        open(os.path.join(db, name), "wb").write(header.encode().ljust(512, b" ") + body)
    if not os.path.exists(os.path.join(db, "main.cvd")):
        write("main.cvd", 62, b"main body")
    daily = int(os.environ.get("FAKE_FRESHCLAM_DAILY", "27100"))
    write("daily.cld", daily, b"daily body %d" % daily)
    print("daily.cld updated (version: %d)" % daily)
    sys.exit(0)
    ''')


@pytest.fixture
def bucket(monkeypatch):
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield s3


@pytest.fixture
def fake_freshclam(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "freshclam"
    script.write_text(FAKE_FRESHCLAM.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    seen = tmp_path / "freshclam-configs.txt"
    monkeypatch.setenv("FAKE_FRESHCLAM_SEEN", str(seen))
    return seen


def run_update(tmp_path: Path, s3) -> object:
    work = tmp_path / f"work{len(list(tmp_path.glob('work*')))}"
    return update_signatures(S3SignatureMirror(BUCKET, client=s3), freshclam="freshclam",
                             mirror="database.clamav.net", workdir=work)


def manifest(s3) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=MANIFEST)["Body"].read())


def test_first_update_publishes_every_database_with_a_manifest(tmp_path, bucket, fake_freshclam):
    result = run_update(tmp_path, bucket)
    assert sorted(result.uploaded) == ["daily.cld", "main.cvd"]
    files = manifest(bucket)["files"]
    assert files["daily.cld"]["version"] == 27100 and files["main.cvd"]["version"] == 62
    for name, entry in files.items():
        obj = bucket.get_object(Bucket=BUCKET, Key=f"clamav/{name}", VersionId=entry["version_id"])
        assert hashlib.sha256(obj["Body"].read()).hexdigest() == entry["sha256"]
    config = fake_freshclam.read_text()
    assert "DatabaseMirror database.clamav.net" in config
    assert "NotifyClamd" not in config and "DatabaseOwner" not in config


def test_only_changed_databases_are_uploaded_and_freshclam_keeps_its_state(
        tmp_path, bucket, fake_freshclam, monkeypatch):
    run_update(tmp_path, bucket)
    first = manifest(bucket)
    again = run_update(tmp_path, bucket)
    assert again.uploaded == [] and manifest(bucket) == first  # nothing new: manifest untouched
    monkeypatch.setenv("FAKE_FRESHCLAM_DAILY", "27101")
    newer = run_update(tmp_path, bucket)
    assert newer.uploaded == ["daily.cld"]
    files = manifest(bucket)["files"]
    assert files["daily.cld"]["version"] == 27101
    assert files["main.cvd"] == first["files"]["main.cvd"]
    # freshclam.dat (its mirror cool-down and id) travels between runs through the bucket.
    state = bucket.get_object(Bucket=BUCKET, Key="clamav/freshclam.dat")["Body"].read()
    assert state == b"3"


def test_a_failed_freshclam_publishes_nothing(tmp_path, bucket, fake_freshclam, monkeypatch):
    monkeypatch.setenv("FAKE_FRESHCLAM_EXIT", "52")
    with pytest.raises(SignatureUpdateFailed, match="exited with 52"):
        run_update(tmp_path, bucket)
    assert "Contents" not in bucket.list_objects_v2(Bucket=BUCKET)


def test_a_missing_freshclam_is_a_failed_update(tmp_path, bucket):
    with pytest.raises(SignatureUpdateFailed, match="did not run"):
        update_signatures(S3SignatureMirror(BUCKET, client=bucket), freshclam=str(tmp_path / "nope"),
                          mirror="database.clamav.net", workdir=tmp_path / "w")


def test_the_scanner_fetches_the_pinned_versions(tmp_path, bucket, fake_freshclam, monkeypatch):
    run_update(tmp_path, bucket)
    pinned = manifest(bucket)
    target = tmp_path / "clamav"
    mirror = S3SignatureMirror(BUCKET, client=bucket)
    assert fetch_signatures(mirror, target) == ["daily.cld", "main.cvd"]
    assert database_version(target / "daily.cld") == 27100
    assert fetch_signatures(mirror, target) == []  # a warm start keeps what it has
    # An upload newer than the manifest (an update half done) is not what the scanner loads.
    bucket.put_object(Bucket=BUCKET, Key="clamav/daily.cld", Body=b"half-published")
    (target / "daily.cld").unlink()
    assert fetch_signatures(mirror, target) == ["daily.cld"]
    assert hashlib.sha256((target / "daily.cld").read_bytes()).hexdigest() == (
        pinned["files"]["daily.cld"]["sha256"])


def test_a_tampered_download_is_refused(tmp_path, bucket):
    mirror = S3SignatureMirror(BUCKET, client=bucket)
    bucket.put_object(Bucket=BUCKET, Key="clamav/daily.cld", Body=b"not what the manifest says")
    mirror.put_manifest({"files": {"daily.cld": {"sha256": "0" * 64, "version_id": ""}}})
    with pytest.raises(ValueError, match="sha256"):
        fetch_signatures(mirror, tmp_path / "clamav")
    assert not (tmp_path / "clamav" / "daily.cld").exists()


def test_nothing_published_yet(tmp_path, bucket):
    with pytest.raises(FileNotFoundError, match="SignatureUpdateFunction"):
        fetch_signatures(S3SignatureMirror(BUCKET, client=bucket), tmp_path / "clamav")


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
def test_manifest_names_cannot_leave_the_directory(tmp_path, bucket, name):
    mirror = S3SignatureMirror(BUCKET, client=bucket)
    with pytest.raises(ValueError, match="not a signature file name"):
        mirror.download(name, tmp_path / "x")


@pytest.mark.skipif(shutil.which("clamd", path="/usr/sbin:/usr/bin:/sbin:/bin") is None,
                    reason="clamd is not installed")
def test_a_real_clamd_starts_on_the_fetched_databases(tmp_path, bucket):
    """A tiny hash database published like freshclam's: clamd loads it and finds the sample."""
    sample = b"mailmoat signature mirror test sample\n"
    database = tmp_path / "test.hdb"
    database.write_text(f"{hashlib.md5(sample).hexdigest()}:{len(sample)}:Mailmoat.Mirror.Test\n")
    mirror = S3SignatureMirror(BUCKET, client=bucket)
    digest = hashlib.sha256(database.read_bytes()).hexdigest()
    mirror.put_manifest({"files": {"test.hdb": {"sha256": digest,
                                                "version_id": mirror.upload("test.hdb", database,
                                                                            sha256=digest)}}})
    run_dir = Path("/tmp") / f"mm-clamd-{os.getpid()}"  # a unix socket path must stay short
    run_dir.mkdir(exist_ok=True)
    try:
        assert fetch_signatures(mirror, run_dir / "db") == ["test.hdb"]
        sock = run_dir / "clamd.sock"
        config = run_dir / "clamd.conf"
        config.write_text(f"DatabaseDirectory {run_dir / 'db'}\nLocalSocket {sock}\n"
                          f"TemporaryDirectory {run_dir}\nForeground yes\n")
        antivirus = ClamdAntivirus(str(sock), connect_timeout=1.0)
        clamd = ClamdProcess([shutil.which("clamd", path="/usr/sbin:/usr/bin:/sbin:/bin"),
                              f"--config-file={config}"], ready=antivirus.ping, start_seconds=60)
        try:
            assert clamd.ensure()
            assert clamd.ensure()  # already up: not started twice
            result = antivirus.scan(sample)
            assert result.infected and "Mailmoat.Mirror.Test" in (result.signature or "")
        finally:
            if clamd.process is not None:
                clamd.process.terminate()
                clamd.process.wait(timeout=10)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_clamd_that_exits_while_loading_is_reported(tmp_path):
    clamd = ClamdProcess([sys.executable, "-c", "raise SystemExit(2)"], ready=lambda: False,
                         start_seconds=10)
    assert clamd.ensure() is False


def test_a_clamd_still_loading_is_waited_for_not_started_twice(tmp_path):
    ready = tmp_path / "ready"
    loader = f"import pathlib, time; time.sleep(3); pathlib.Path({str(ready)!r}).touch(); time.sleep(30)"
    clamd = ClamdProcess([sys.executable, "-c", loader], ready=ready.exists, start_seconds=0.1)
    try:
        assert clamd.ensure() is False  # gave up waiting this time
        first = clamd.process
        assert clamd.ensure() is False and clamd.process is first  # still loading: not a second one
        clamd.start_seconds = 10
        assert clamd.ensure() is True and clamd.process is first  # the same process, now ready
    finally:
        clamd.process.kill()
        clamd.process.wait(timeout=10)
