"""module_utils/supply/_freshness.py: the mirror's sources and indexes, the outdated packages, ages and thresholds."""

from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path
from urllib.error import URLError

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import parse_utc
from ansible_collections.immutable.infra.plugins.module_utils.supply import _freshness
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import FreshnessError
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import MirrorIndex

DIGEST = "sha256:" + "c" * 64
IMAGE = "127.0.0.1:5000/web@" + DIGEST
NOW = parse_utc("2026-12-04T12:00:00Z")


def packages_index(entries):
    return "".join(
        f"Package: {name}\nSource: src\nVersion: {version}\nArchitecture: amd64\nDescription: x\n second line\n\n"
        for name, version in entries
    ).encode()


def write_repo(root: Path, suite: str, entries, compress: str = ".xz", component: str = "main", arch: str = "amd64"):
    directory = root / "dists" / suite / component / f"binary-{arch}"
    directory.mkdir(parents=True, exist_ok=True)
    data = packages_index(entries)
    packed = {".xz": lzma.compress, ".gz": gzip.compress, "": bytes}[compress](data)
    (directory / f"Packages{compress}").write_bytes(packed)


def sbom(*components, created=None):
    document = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "metadata": {"component": {"name": "127.0.0.1:5000/web", "version": DIGEST}},
        "components": [
            {"name": name, "version": version, "purl": f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12"}
            for name, version, arch in components
        ]
        + [{"name": "requests", "version": "2.0", "purl": "pkg:pypi/requests@2.0"}],
    }
    if created:
        document["metadata"]["properties"] = [{"name": _freshness.CREATED_PROPERTY, "value": created}]
    return document


def no_http(url, timeout=None):
    raise AssertionError(f"no HTTP expected: {url}")


def test_a_source_is_url_suite_and_components_and_a_bad_one_names_the_form():
    assert _freshness.parse_source("http://mirror/debian/ bookworm main contrib") == {
        "url": "http://mirror/debian",
        "suite": "bookworm",
        "components": ["main", "contrib"],
    }
    pasted = _freshness.parse_source("deb [signed-by=/usr/share/keyrings/k.gpg] file:///srv/repo bookworm-updates main")
    assert pasted["url"] == "file:///srv/repo" and pasted["suite"] == "bookworm-updates"
    with pytest.raises(FreshnessError, match="needs a URL, a suite and at least one component: give"):
        _freshness.parse_source("http://mirror/debian bookworm")
    with pytest.raises(FreshnessError, match="must be http://, https:// or file://"):
        _freshness.parse_source("ftp://mirror/debian bookworm main")
    with pytest.raises(FreshnessError, match="flat repository"):
        _freshness.parse_source("http://mirror/repo ./ main")


def test_a_password_in_a_mirror_url_is_never_shown():
    assert _freshness.display_url("https://user:s3cret@mirror/debian") == "https://***@mirror/debian"
    with pytest.raises(FreshnessError) as caught:
        _freshness.parse_source("https://user:s3cret@mirror/debian bookworm")
    assert "s3cret" not in str(caught.value)

    def unreachable(url, timeout=None):
        raise URLError("Name or service not known")

    mirror = MirrorIndex([_freshness.parse_source("https://user:s3cret@mirror/debian bookworm main")], unreachable)
    with pytest.raises(FreshnessError, match="cannot reach the mirror at https://\\*\\*\\*@mirror") as caught:
        mirror.candidate("libc6", "amd64")
    assert "s3cret" not in str(caught.value)


def test_the_machine_apt_sources_one_line_and_deb822(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# a comment\ndeb http://mirror/debian bookworm main\ndeb-src http://mirror/debian bookworm main\n"
        "deb cdrom:[Debian]/ bookworm main\n"
    )
    (tmp_path / "sources.list.d" / "extra.list").write_text("deb [arch=amd64] https://other/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# http://snapshot/archive\nURIs: http://mirror/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://off/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src/debian\nSuites: bookworm\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "vendor.sources.disabled").write_text(
        "Types: deb\nURIs: http://vendor/x\nSuites: stable\nComponents: main\n"
    )
    assert _freshness.apt_sources(str(tmp_path)) == [
        {"url": "http://mirror/debian", "suite": "bookworm", "components": ["main"]},
        {"url": "https://other/debian", "suite": "bookworm", "components": ["main"]},
        {"url": "http://mirror/debian", "suite": "bookworm-updates", "components": ["main"]},
        {"url": "http://mirror/debian-security", "suite": "bookworm-security", "components": ["main"]},
    ]
    assert _freshness.apt_sources(str(tmp_path / "none")) == []


def test_the_index_keeps_each_package_highest_version():
    data = packages_index([("curl", "7.88.1-10+deb12u8"), ("curl", "7.88.1-10+deb12u12"), ("libc6", "2.36-9")])
    data += b"Package: bash\nVersion: 5.2.15-2+b7\n"  # no final blank line
    assert _freshness.parse_packages(data) == {
        "curl": "7.88.1-10+deb12u12",
        "libc6": "2.36-9",
        "bash": "5.2.15-2+b7",
    }


@pytest.mark.parametrize("compress", [".xz", ".gz", ""])
def test_a_file_mirror_is_read_in_each_compression_once_per_run(tmp_path, compress):
    write_repo(tmp_path, "bookworm", [("curl", "7.88.1-10+deb12u12")], compress=compress)
    mirror = MirrorIndex([_freshness.parse_source(f"file://{tmp_path} bookworm main")], no_http)
    assert mirror.candidate("curl", "amd64") == ("7.88.1-10+deb12u12", "bookworm")
    # parsed once: the second look-up does not read the index again
    for path in (tmp_path / "dists").rglob("Packages*"):
        path.unlink()
    assert mirror.candidate("curl", "amd64") == ("7.88.1-10+deb12u12", "bookworm")
    assert mirror.candidate("absent", "amd64") == (None, None)


def test_the_highest_version_over_several_suites_wins_and_names_its_suite(tmp_path):
    write_repo(tmp_path, "bookworm", [("openssl", "3.0.15-1~deb12u1"), ("curl", "7.88.1-10+deb12u8")])
    write_repo(tmp_path, "bookworm-security", [("openssl", "3.0.16-1~deb12u1")])
    sources = [
        _freshness.parse_source(f"file://{tmp_path} {suite} main") for suite in ("bookworm", "bookworm-security")
    ]
    mirror = MirrorIndex(sources, no_http)
    assert mirror.candidate("openssl", "amd64") == ("3.0.16-1~deb12u1", "bookworm-security")
    assert mirror.candidate("curl", "amd64") == ("7.88.1-10+deb12u8", "bookworm")


def test_a_missing_index_names_the_url_and_the_setting(tmp_path):
    mirror = MirrorIndex([_freshness.parse_source(f"file://{tmp_path} trixie main")], no_http)
    with pytest.raises(FreshnessError, match="no package index at file://.*/dists/trixie/main/binary-amd64/Packages"):
        mirror.candidate("curl", "amd64")
    (tmp_path / "dists" / "bad" / "main" / "binary-amd64").mkdir(parents=True)
    (tmp_path / "dists" / "bad" / "main" / "binary-amd64" / "Packages.xz").write_bytes(b"not xz")
    mirror = MirrorIndex([_freshness.parse_source(f"file://{tmp_path} bad main")], no_http)
    with pytest.raises(FreshnessError, match="is damaged"):
        mirror.candidate("curl", "amd64")


def test_an_artifact_s_outdated_packages_and_age(tmp_path):
    write_repo(tmp_path, "bookworm", [("bsdutils", "1:2.38.1-5+deb12u3"), ("probe", "1.0-2"), ("tzdata", "2024a-0")])
    mirror = MirrorIndex([_freshness.parse_source(f"file://{tmp_path} bookworm main")], no_http)
    document = sbom(
        ("bsdutils", "1:2.38.1-5+deb12u3", "amd64"), ("probe", "1.0-1", "all"), ("tzdata", "2025b-0", "all")
    )
    record = {"created": "2026-11-01T12:00:00Z"}
    result = _freshness.check_artifact("prod", IMAGE, document, record, mirror, NOW, parse_utc)
    assert result["arch"] == "amd64" and result["packages"] == 3
    assert result["age_days"] == 33.0 and result["created_from"] == "record"
    # newer in the mirror: named with both versions; the same (epoch included) or older in the mirror: not
    assert result["outdated"] == [
        {"name": "probe", "installed": "1.0-1", "candidate": "1.0-2", "suite": "bookworm", "arch": "all"}
    ]
    assert result["outdated_count"] == 1
    # without a record: the image's created label as syft kept it in the SBOM
    labelled = sbom(("probe", "1.0-2", "amd64"), created="2026-12-03T00:00:00Z")
    result = _freshness.check_artifact("dev", IMAGE, labelled, None, mirror, NOW, parse_utc)
    assert (result["age_days"], result["created_from"], result["outdated_count"]) == (1.5, "image label", 0)


def test_an_sbom_with_only_arch_all_packages_needs_the_arch():
    mirror = MirrorIndex([], no_http)
    with pytest.raises(FreshnessError, match="give freshness_arch"):
        _freshness.check_artifact("dev", IMAGE, sbom(("probe", "1", "all")), None, mirror, NOW, parse_utc)
    result = _freshness.check_artifact("dev", IMAGE, sbom(("probe", "1", "all")), None, mirror, NOW, parse_utc, "arm64")
    assert result["arch"] == "arm64" and result["outdated_count"] == 0


def report_item(env, age, outdated, created="2026-10-01T00:00:00Z"):
    items = [
        {"name": f"pkg{i}", "installed": "1.0-1", "candidate": "1.0-2", "suite": "bookworm", "arch": "amd64"}
        for i in range(outdated or 0)
    ]
    return {
        "env": env,
        "id": f"127.0.0.1:5000/web@sha256:{env[0] * 64}",
        "created": created,
        "age_days": age,
        "packages": 100,
        "outdated": items,
        "outdated_count": outdated,
    }


def test_thresholds_name_env_artifact_value_and_threshold():
    report = [report_item("dev", 2.0, 0), report_item("prod", 41.3, 3), {"env": "staging", "id": None}]
    assert _freshness.threshold_problems(report) == []
    problems = _freshness.threshold_problems(report, max_age_days=30, max_outdated=2)
    assert problems == [
        f"prod: 127.0.0.1:5000/web@sha256:{'p' * 64} is 41 days old (baked 2026-10-01T00:00:00Z), older than"
        " max_age_days 30: rebake it (bake_max_age forces a rebuild of cached inputs) and promote it",
        f"prod: 127.0.0.1:5000/web@sha256:{'p' * 64} has 3 outdated packages, more than max_outdated 2: rebake it"
        " (bake_max_age forces a rebuild of cached inputs) and promote it",
    ]
    # 0 is a threshold (not "unset"); unknown values fail a threshold that is set, naming why
    assert len(_freshness.threshold_problems(report, max_outdated=0)) == 1
    unknown = [dict(report_item("dev", None, None), created=None)]
    problems = _freshness.threshold_problems(unknown, max_age_days=30, max_outdated=0)
    assert "its age is unknown" in problems[0] and "not checked (no SBOM)" in problems[1]


def test_the_summary_is_one_line_per_env_and_caps_the_packages():
    report = [report_item("dev", 2.4, 0), report_item("prod", 41.3, 13), {"env": "staging", "id": None}]
    lines = _freshness.summary_lines(report, limit=10)
    assert lines[0] == f"dev: 127.0.0.1:5000/web@sha256:{'d' * 64} 2 days old, 0 of 100 packages outdated"
    assert lines[1] == f"prod: 127.0.0.1:5000/web@sha256:{'p' * 64} 41 days old, 13 of 100 packages outdated"
    assert lines[2] == "  pkg0 1.0-1 -> 1.0-2 (bookworm)"
    assert lines[12] == "  ... and 3 more"
    assert lines[13] == "staging: nothing live"
    ami = dict(report_item("prod", 3.0, None), id="ami-0123456789abcdef0", note="packages not checked (an AMI)")
    assert _freshness.summary_lines([ami]) == ["prod: ami-0123456789abcdef0 3 days old, packages not checked (an AMI)"]


def test_an_artifact_is_read_from_its_local_record_and_sbom(tmp_path):
    records = tmp_path / "web" / "records"
    records.mkdir(parents=True)
    (records / "b1.json").write_text(json.dumps({"id": IMAGE, "created": "2026-12-01T00:00:00Z"}))
    (tmp_path / "web" / "sbom").mkdir()
    document = sbom(("probe", "1.0-1", "amd64"))
    (tmp_path / "web" / "sbom" / f"{DIGEST.replace(':', '-')}.cdx.json").write_text(json.dumps(document))

    def no_registry(host):
        raise AssertionError(f"no registry expected: {host}")

    found, record, note = _freshness.read_artifact(IMAGE, str(tmp_path), "web", no_registry)
    assert found == document and record["created"] == "2026-12-01T00:00:00Z" and note is None
    found, record, note = _freshness.read_artifact("ami-0123456789abcdef0", str(tmp_path), "web", no_registry)
    assert found is None and record is None and "an AMI" in note
