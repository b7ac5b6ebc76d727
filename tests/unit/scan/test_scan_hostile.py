"""Hostile archives (DESIGN §7): each gets a verdict within 2 s, with bounded memory, and nothing is written."""

from __future__ import annotations

import gzip
import io
import resource
import tarfile
import time
import zipfile

import py7zr
import pytest

from tests.unit.scan.scanfiles import eml, make_zip, only

SECONDS = 2.0
MAX_RSS_GROWTH_MB = 150


def nested_bomb(levels: int = 3, width: int = 16, leaf_mb: int = 4) -> bytes:
    """42.zip in small: each level holds `width` copies of the level below; zeros at the bottom."""
    data = make_zip({f"{i}.bin": b"\0" * (leaf_mb * 1024 * 1024) for i in range(1)})
    leaf = b"\0" * (leaf_mb * 1024 * 1024)
    data = make_zip({f"{i}.bin": leaf for i in range(width)})
    for level in range(1, levels):
        data = make_zip({f"lib{level}_{i}.zip": data for i in range(width)})
    return data


def many_members(count: int = 100_000) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(zipfile.ZipInfo(f"f{i}.txt"), b"")
    return buf.getvalue()


def deep(depth: int = 20) -> bytes:
    data = make_zip({"core.txt": b"bottom"})
    for level in range(depth):
        data = make_zip({f"level{level}.zip": data})
    return data


def traversal_zip() -> bytes:
    return make_zip({"../../etc/cron.d/evil": b"* * * * * root sh", "/etc/passwd": b"x",
                     "C:\\Windows\\System32\\evil.txt": b"x", "ok.txt": b"fine"})


def traversal_tar() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("innocent")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        tf.addfile(link)
    return raw.getvalue()


def truncated_zip() -> bytes:
    data = make_zip({"a.txt": b"hello " * 5000, "b.exe": b"MZ" + bytes(range(256)) * 100})
    return data[: len(data) // 2]


def sevenzip_bomb() -> bytes:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as z:
        z.writestr(b"\0" * (20 * 1024 * 1024), "zeros.bin")
    return buf.getvalue()


def gzip_bomb() -> bytes:
    return gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)


CASES = [
    ("42-style nested bomb", "42.zip", nested_bomb, {"ARCHIVE_LIMIT"}),
    ("100k members", "many.zip", many_members, {"ARCHIVE_LIMIT"}),
    ("depth 20", "deep.zip", deep, {"ARCHIVE_LIMIT"}),
    ("zip path traversal", "paths.zip", traversal_zip, {"PATH_TRAVERSAL"}),
    ("tar path traversal and link", "paths.tar", traversal_tar, {"PATH_TRAVERSAL", "ARCHIVE_TYPE"}),
    ("truncated zip", "cut.zip", truncated_zip, {"ARCHIVE_CORRUPT"}),
    ("7z bomb", "zeros.7z", sevenzip_bomb, {"ARCHIVE_LIMIT"}),
    ("gzip bomb", "zeros.gz", gzip_bomb, {"ARCHIVE_LIMIT"}),
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(("name", "builder", "symbols"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_hostile_archive_gets_a_verdict_quickly(name, builder, symbols, analyse, tmp_path,
                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = eml((name, builder()))
    before_rss = _rss_mb()
    started = time.perf_counter()
    report = analyse(raw)
    elapsed = time.perf_counter() - started
    att = only(report)
    assert elapsed < SECONDS, f"{name}: {elapsed:.2f} s"
    assert _rss_mb() - before_rss < MAX_RSS_GROWTH_MB
    assert att["verdict"] in {"risky", "danger", "encrypted", "unsupported"}
    assert symbols <= set(att["symbols"]), att["symbols"]
    assert att["action"] != "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "mailmoat.sqlite3"] or \
        not any(p.name in {"etc", "outside.txt", "evil"} for p in tmp_path.rglob("*"))


def test_traversal_members_are_named_in_the_report(analyse):
    att = only(analyse(eml(("paths.zip", traversal_zip()))))
    flagged = {m["name"] for m in att["members"] if "PATH_TRAVERSAL" in m["symbols"]}
    assert flagged == {"../../etc/cron.d/evil", "/etc/passwd", "C:\\Windows\\System32\\evil.txt"}
    assert [m["verdict"] for m in att["members"] if m["name"] == "ok.txt"] == ["safe"]


def test_depth_limit_names_the_bound(analyse):
    report = analyse(eml(("deep.zip", deep())))
    details = {f["detail"] for f in report["findings"] if f["symbol"] == "ARCHIVE_LIMIT"}
    assert any("nested deeper than 5" in d for d in details)


def test_a_file_that_fails_an_analyser_is_scan_failed_not_a_crash(analyse, monkeypatch):
    from mailmoat.scan import office

    def boom(*args, **kwargs):
        raise RuntimeError("analyser exploded")

    monkeypatch.setattr(office, "analyse_office", boom)
    from tests.unit.scan.scanfiles import make_ooxml

    report = analyse(eml(("a.docx", make_ooxml("word"))))
    att = only(report)
    assert "SCAN_FAILED" in att["symbols"] and att["action"] == "isolate"
    assert report["disposition"] != "held"  # the stage did not fail: the message goes on
    assert not any(f["symbol"] == "STAGE_FAILED" for f in report["findings"])
    assert any("analyser exploded" in f["detail"] for f in report["findings"])


def test_time_bound_applies_to_the_whole_message(tmp_path):
    from mailmoat.bootstrap import bootstrap
    from mailmoat.context import Envelope
    from mailmoat.settings import Limits, Settings

    settings = Settings(mode="test", limits=Limits(scan_seconds=0.0))
    report = bootstrap(settings, data_dir=tmp_path).analyse(
        eml(("a.txt", b"x"), ("b.zip", make_zip({"c.txt": b"y"}))), Envelope(),
        stages=["scan", "isolate"]).to_report()
    assert all("SCAN_FAILED" in a["symbols"] for a in report["attachments"])
    assert {a["action"] for a in report["attachments"]} == {"isolate"}


def test_pdf_embedded_bomb_stops_at_the_ratio_bound(analyse):
    import pikepdf

    doc = pikepdf.new()
    doc.add_blank_page()
    doc.attachments["zeros.bin"] = pikepdf.AttachedFileSpec(doc, b"\0" * (64 * 1024 * 1024),
                                                            filename="zeros.bin")
    out = io.BytesIO()
    doc.save(out)
    started = time.perf_counter()
    att = only(analyse(eml(("report.pdf", out.getvalue()))))
    assert time.perf_counter() - started < SECONDS
    assert {"PDF_EMBEDDED_FILE", "ARCHIVE_LIMIT"} <= set(att["symbols"])
