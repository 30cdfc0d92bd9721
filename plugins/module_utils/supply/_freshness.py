# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Freshness: how old each live artifact is, and which of its Debian packages have a newer version in the mirror.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

docs/supply-chain.md ("Freshness") is the user's view. In short:

- the age comes from the artifact record's ``created`` (else the image's ``org.opencontainers.image.created`` label
  as syft wrote it in the SBOM), on the collection's one clock (``ledger/_model.now_seconds``: ``IMMUTABLE_NOW``);
- the installed packages come from the SBOM (``pkg:deb`` purls: name, version, arch), read by ``_sbom.read_sbom``;
- the candidates come from the mirror's package indexes, ``<url>/dists/<suite>/<component>/binary-<arch>/Packages``
  (``.xz``, ``.gz`` or plain), over http(s) or from ``file://``, with the standard library only; each index is read
  and parsed once per run (``MirrorIndex``);
- versions are compared with dpkg's rules (``_debversion``);
- ``threshold_problems`` says which artifact is past ``max_age_days`` or has more than ``max_outdated`` outdated
  packages, naming the environment, the artifact and the threshold.

The mirror defaults to the machine's own apt sources (``apt_sources``: sources.list, sources.list.d/*.list and
deb822 *.sources), as scripts/setup.sh derives the base image's mirror; no mirror host is written anywhere here.
"""

from __future__ import annotations

import glob
import gzip
import json
import lzma
import os
import re
from urllib.error import HTTPError
from urllib.error import URLError
from urllib.parse import unquote
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import find_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import split_id
from ansible_collections.immutable.infra.plugins.module_utils.supply._debversion import compare_versions
from ansible_collections.immutable.infra.plugins.module_utils.supply._diff import package_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import packages
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import read_sbom

SOURCE_FORM = '"<url> <suite> <component>..." (e.g. "http://mirror/debian bookworm main")'
SCHEMES = ("http", "https", "file")
INDEX_SUFFIXES = (".xz", ".gz", "")
CREATED_PROPERTY = "syft:image:labels:org.opencontainers.image.created"
_FIELD_RE = re.compile(rb"^(Package|Version):[ \t]*(\S+)", re.MULTILINE)


class FreshnessError(Exception):
    """The mirror or an artifact could not be read; the message names what and the fix (never a secret)."""


# -- the mirror's sources ------------------------------------------------------------------------------------------


def display_url(url):
    """The URL without its user and password (a mirror URL may carry them): for messages and return values."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def parse_source(text):
    """{url, suite, components} of one freshness source "<url> <suite> <component>..." (a leading "deb" and apt's
    "[option=value ...]" are accepted, so a sources.list line can be pasted). FreshnessError names a bad one."""
    if not isinstance(text, str):
        raise FreshnessError(f"freshness source {text!r} is not a string: give {SOURCE_FORM}")
    words = re.sub(r"\[[^\]]*\]", " ", text).split()
    if words and words[0] == "deb":
        words = words[1:]
    if len(words) < 3:
        raise FreshnessError(
            f"freshness source {display_url(text)!r} needs a URL, a suite and at least one component:"
            f" give {SOURCE_FORM}"
        )
    url, suite, components = words[0], words[1], words[2:]
    if urlsplit(url).scheme not in SCHEMES:
        raise FreshnessError(
            f"freshness source {display_url(text)!r}: the URL must be http://, https:// or file:// (got"
            f" {display_url(url)!r}): give {SOURCE_FORM}"
        )
    if suite.endswith("/"):
        raise FreshnessError(
            f"freshness source {display_url(text)!r}: a flat repository ({suite!r}) has no dists/ indexes per suite;"
            f" give {SOURCE_FORM}"
        )
    return {"url": url.rstrip("/"), "suite": suite, "components": components}


def _one_line_sources(text):
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("deb "):
            try:
                found.append(parse_source(line))
            except FreshnessError:
                continue  # a cdrom:, mirror+ or flat entry: not a mirror this report can read
    return found


def _deb822_sources(text):
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            if not sep:
                key = None
                continue
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                try:
                    found.append(parse_source(f"{uri} {suite} {fields.get('components', '')}"))
                except FreshnessError:
                    continue
    return found


def apt_sources(apt_dir="/etc/apt"):
    """The machine's apt sources (deb lines of sources.list and sources.list.d/*.list, deb822 sources.list.d/*.sources,
    disabled ones skipped), as parse_source gives them; the mirror of everything this machine installs."""
    found = []
    files = [os.path.join(apt_dir, "sources.list")]
    files += sorted(glob.glob(os.path.join(glob.escape(apt_dir), "sources.list.d", "*.list")))
    files += sorted(glob.glob(os.path.join(glob.escape(apt_dir), "sources.list.d", "*.sources")))
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        found += _deb822_sources(text) if path.endswith(".sources") else _one_line_sources(text)
    unique = []
    for source in found:
        if source not in unique:
            unique.append(source)
    return unique


# -- the package indexes -------------------------------------------------------------------------------------------


def parse_packages(data):
    """{package name: highest version} of a Packages index (bytes, uncompressed)."""
    found = {}
    name = None
    for match in _FIELD_RE.finditer(data):
        field, value = match.group(1), match.group(2).decode("utf-8", "replace")
        if field == b"Package":
            name = value
        elif name is not None:
            current = found.get(name)
            if current is None or compare_versions(value, current) > 0:
                found[name] = value
            name = None
    return found


def _decompress(data, suffix, where):
    try:
        if suffix == ".xz":
            return lzma.decompress(data)
        if suffix == ".gz":
            return gzip.decompress(data)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise FreshnessError(f"the package index {where} is damaged ({exc}): check the mirror") from None
    return data


class MirrorIndex:
    """The candidates of the mirror's sources, each index read and parsed once (per run: one object per run).

    open_url: an opener like common/_http.open_url (http and https); file:// URLs are read from disk."""

    def __init__(self, sources, open_url, timeout=60):
        self.sources = sources
        self.open_url = open_url
        self.timeout = timeout
        self._indexes = {}

    def _fetch(self, url):
        """The bytes at url, or None when there is nothing there (404, no such file)."""
        parts = urlsplit(url)
        if parts.scheme == "file":
            try:
                with open(unquote(parts.path), "rb") as handle:
                    return handle.read()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise FreshnessError(f"cannot read {url}: {exc.strerror}") from None
        try:
            with self.open_url(url, timeout=self.timeout) as response:
                return response.read()
        except HTTPError as exc:
            if exc.code in (403, 404, 410):
                return None
            raise FreshnessError(f"the mirror answered {exc.code} for {display_url(url)}: check the source") from None
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FreshnessError(
                f"cannot reach the mirror at {display_url(url)} ({reason}): check the network or give freshness_sources"
            ) from None

    def index(self, source, component, arch):
        """{name: version} of one suite, component and architecture."""
        key = (source["url"], source["suite"], component, arch)
        if key not in self._indexes:
            base = f"{source['url']}/dists/{source['suite']}/{component}/binary-{arch}/Packages"
            for suffix in INDEX_SUFFIXES:
                data = self._fetch(base + suffix)
                if data is not None:
                    self._indexes[key] = parse_packages(_decompress(data, suffix, display_url(base + suffix)))
                    break
            else:
                raise FreshnessError(
                    f"no package index at {display_url(base)}(.xz|.gz): check the source's suite"
                    f" {source['suite']!r} and component {component!r} (freshness_sources) and the architecture"
                    f" {arch!r}"
                )
        return self._indexes[key]

    def candidate(self, name, arch):
        """(highest version, suite) of a package over every source, or (None, None)."""
        best = suite = None
        for source in self.sources:
            for component in source["components"]:
                version = self.index(source, component, arch).get(name)
                if version is not None and (best is None or compare_versions(version, best) > 0):
                    best, suite = version, source["suite"]
        return best, suite


# -- one artifact --------------------------------------------------------------------------------------------------


def deb_packages(document):
    """[(name, version, arch)] of the Debian packages of a CycloneDX SBOM (pkg:deb purls)."""
    found = []
    for package in packages(document):
        if package["type"] == "deb" and package["name"] and package["version"]:
            found.append((package["name"], package["version"], package_key(package)[2]))
    return found


def main_arch(installed, arch=None):
    """The artifact's architecture: arch when given, else the most frequent one of its packages (not 'all')."""
    if arch:
        return arch
    counts = {}
    for _name, _version, package_arch in installed:
        if package_arch and package_arch != "all":
            counts[package_arch] = counts.get(package_arch, 0) + 1
    if not counts:
        return None
    return max(sorted(counts), key=counts.get)


def outdated_packages(installed, mirror, arch):
    """[{name, installed, candidate, suite, arch}] of the packages with a newer version in the mirror, by name."""
    found = []
    for name, version, package_arch in installed:
        index_arch = arch if package_arch in ("", "all") else package_arch
        candidate, suite = mirror.candidate(name, index_arch)
        if candidate is not None and compare_versions(candidate, version) > 0:
            found.append(
                {"name": name, "installed": version, "candidate": candidate, "suite": suite, "arch": package_arch}
            )
    return sorted(found, key=lambda item: (item["name"], item["arch"]))


def created_time(record, document):
    """(ISO time, where from) of when the artifact was baked: the record's created, else the image label in the SBOM."""
    if record and record.get("created"):
        return record["created"], "record"
    for prop in ((document or {}).get("metadata") or {}).get("properties") or []:
        if prop.get("name") == CREATED_PROPERTY and prop.get("value"):
            return prop["value"], "image label"
    return None, None


def age_in_days(created, now, parse):
    """Days (one decimal) from created to now (seconds); None when created is unknown or not a time."""
    seconds = parse(created) if created else None
    if seconds is None:
        return None
    return round(max(now - seconds, 0.0) / 86400.0, 1)


def check_artifact(env, artifact_id, document, record, mirror, now, parse, arch=None):
    """The freshness of one artifact: {env, id, created, created_from, age_days, arch, packages, outdated,
    outdated_count}. document: its SBOM (None: no SBOM, packages not checked)."""
    created, created_from = created_time(record, document)
    result = {
        "env": env,
        "id": artifact_id,
        "created": created,
        "created_from": created_from,
        "age_days": age_in_days(created, now, parse),
        "arch": None,
        "packages": None,
        "outdated": [],
        "outdated_count": None,
    }
    if document is None:
        return result
    installed = deb_packages(document)
    result["packages"] = len(installed)
    result["arch"] = main_arch(installed, arch)
    if installed and result["arch"] is None:
        raise FreshnessError(
            f"{env}: the SBOM of {artifact_id} names no architecture (only 'all' packages): give freshness_arch"
        )
    if installed:
        result["outdated"] = outdated_packages(installed, mirror, result["arch"])
    result["outdated_count"] = len(result["outdated"])
    return result


# -- thresholds and the report -------------------------------------------------------------------------------------


def threshold_problems(report, max_age_days=None, max_outdated=None):
    """One sentence per artifact past a threshold, naming the environment, the artifact, the value and the threshold."""
    problems = []
    fix = "rebake it (bake_max_age forces a rebuild of cached inputs) and promote it"
    for item in report:
        if item.get("id") is None:
            continue
        where = f"{item['env']}: {item['id']}"
        if max_age_days is not None:
            if item["age_days"] is None:
                problems.append(
                    f"{where}: its age is unknown (no artifact record, no creation label), max_age_days is"
                    f" {max_age_days}: rebake it so that it has a record"
                )
            elif item["age_days"] > max_age_days:
                problems.append(
                    f"{where} is {int(item['age_days'])} days old (baked {item['created']}), older than max_age_days"
                    f" {max_age_days}: {fix}"
                )
        if max_outdated is not None:
            if item["outdated_count"] is None:
                problems.append(
                    f"{where}: its packages were not checked (no SBOM), max_outdated is {max_outdated}: rebake it"
                    " with bake_sbom=true (a cached bake adds the SBOM)"
                )
            elif item["outdated_count"] > max_outdated:
                count = item["outdated_count"]
                problems.append(
                    f"{where} has {count} outdated package{'s' if count != 1 else ''},"
                    f" more than max_outdated {max_outdated}: {fix}"
                )
    return problems


def summary_lines(report, limit=10):
    """One line per environment, then its outdated packages (at most limit each, the rest counted)."""
    lines = []
    for item in report:
        if item.get("id") is None:
            lines.append(f"{item['env']}: nothing live")
            continue
        age = "age unknown" if item["age_days"] is None else f"{int(item['age_days'])} days old"
        if item["outdated_count"] is None:
            packages_text = item.get("note") or "packages not checked (no SBOM)"
        else:
            packages_text = f"{item['outdated_count']} of {item['packages']} packages outdated"
        lines.append(f"{item['env']}: {item['id']} {age}, {packages_text}")
        for package in item["outdated"][:limit]:
            lines.append(f"  {package['name']} {package['installed']} -> {package['candidate']} ({package['suite']})")
        if len(item["outdated"]) > limit:
            lines.append(f"  ... and {len(item['outdated']) - limit} more")
    return lines


class _LazyClient:
    """The registry's client, made on first use: an artifact whose SBOM is local needs no registry."""

    def __init__(self, client_for, host):
        self._client_for = client_for
        self._host = host

    def __getattr__(self, name):
        return getattr(self._client_for(self._host), name)


def ami_sbom_document(record, artifacts_dir, s3_for=None):
    """(SBOM document or None, record, note) of an AMI, from its record's sbom field (docs/supply-chain.md, "AMIs"):
    the bake's local copy, else the S3 object it names (s3_for(): an S3 client; default boto3's, from the usual AWS_*
    environment), either checked against the record's sha256."""
    sbom = (record or {}).get("sbom")
    if not isinstance(sbom, dict) or not sbom.get("sha256"):
        return None, record, "packages not checked (an AMI baked without bake_ami_evidence_bucket: no SBOM)"
    import hashlib

    expected = str(sbom["sha256"]).split(":", 1)[-1]
    data = None
    if sbom.get("path") and record.get("name"):
        try:
            with open(os.path.join(artifacts_dir, record["name"], sbom["path"]), "rb") as handle:
                data = handle.read()
        except OSError:
            data = None
    if data is None or hashlib.sha256(data).hexdigest() != expected:
        from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import EvidenceError
        from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import get_object
        from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import split_location

        reference = str(sbom.get("reference") or "")
        if s3_for is None:

            def s3_for():
                import boto3

                return boto3.client("s3")

        try:
            bucket, key = split_location(reference)
            data = get_object(s3_for(), bucket, key)
        except EvidenceError as exc:
            raise FreshnessError(f"cannot read the AMI's SBOM: {exc}") from None
        if data is None or hashlib.sha256(data).hexdigest() != expected:
            raise FreshnessError(
                f"the SBOM {reference} is missing or is not the one the record names ({sbom['sha256']})"
            )
    return json.loads(data), record, None


def read_artifact(artifact_id, artifacts_dir, app, client_for):
    """(SBOM document or None, record or None, note) of a live artifact, by the readers of the promotion and the
    package diff: the local copies first, then the registry's (client_for(registry host) gives its client). An AMI's
    comes from its record's sbom field (ami_sbom_document). RecordError, SbomError or RegistryError when one is
    refused or unreadable."""
    record = find_record(artifact_id, artifacts_dir, app, client_for)[1]
    if not (isinstance(artifact_id, str) and "@" in artifact_id):
        return ami_sbom_document(record, artifacts_dir)
    data = read_sbom(_LazyClient(client_for, split_id(artifact_id)[1]), artifact_id, artifacts_dir, app)[1]
    if data is None:
        return None, record, "packages not checked (no SBOM: rebake with bake_sbom=true)"
    return json.loads(data), record, None
