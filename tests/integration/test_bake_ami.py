"""immutable.infra.bake_ami run through ansible-playbook against a real moto_server on 127.0.0.1:5056.

What moto cannot show (pending states, InvalidAMIName.Duplicate, throttling, a copy failing in one region) is in
tests/unit/plugins/module_utils/test__ami.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_fixtures import FAKE_KEYS  # noqa: E402
from moto_fixtures import base_ami_and_subnet  # noqa: E402
from moto_fixtures import ec2_client  # noqa: E402
from moto_fixtures import start_moto  # noqa: E402
from moto_fixtures import stop_moto  # noqa: E402

pytestmark = pytest.mark.moto

PORT = 5056
REGION = "us-east-1"
COPY_REGIONS = ["eu-west-1", "us-west-2"]
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
ACCOUNT = "111122223333"
ORG = "arn:aws:organizations::123456789012:organization/o-abc123def4"
TAG = "immutable-infra:"
# A shared image must be encrypted with customer-managed keys (moto keeps no KMS keys: the references are not checked)
KMS_KEYS = {r: f"arn:aws:kms:{r}:111122223333:alias/web-ami" for r in [REGION, *COPY_REGIONS]}
# No credentials from the host, no metadata-service probing: only what the tests pass.
AWS_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
}


@pytest.fixture(scope="session")
def moto():
    process, endpoint = start_moto(PORT)
    yield endpoint
    stop_moto(process)


@pytest.fixture(scope="module")
def aws(moto):
    """A base AMI, a VPC and a subnet in the source region; the connection arguments every task gets."""
    ec2 = ec2_client(moto)
    base, vpc, subnet = base_ami_and_subnet(ec2, 42)
    connection = {
        "endpoint_url": moto,
        **FAKE_KEYS,
        "region": REGION,
    }
    return {"endpoint": moto, "ec2": ec2, "base_ami": base, "vpc": vpc, "subnet": subnet, "connection": connection}


def run(playbook, name: str, tmp_path: Path, extra: dict, *args: str, env: dict | None = None) -> tuple:
    result_path = tmp_path / f"{name}-{time.time_ns()}.json"
    proc = playbook(
        PLAYBOOKS / name, {**extra, "ami_result_path": str(result_path)}, *args, env={**AWS_ENV, **(env or {})}
    )
    data = json.loads(result_path.read_text()) if result_path.exists() else None
    return proc, data


def step(playbook, aws, tmp_path, args: dict, *flags: str, expect_failure=False, connection=None, env=None):
    extra = {"ami_connection": connection or aws["connection"], "ami_args": args, "ami_expect_failure": expect_failure}
    proc, data = run(playbook, "ami_step.yml", tmp_path, extra, *flags, env=env)
    assert data is not None, proc.stdout + proc.stderr
    if not expect_failure:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not data.get("failed"), data
    return data


def live_instances(ec2, bake_id: str | None = None) -> list[dict]:
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    if bake_id:
        filters.append({"Name": f"tag:{TAG}bake-id", "Values": [bake_id]})
    return [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def temp_resources(ec2, bake_id: str) -> dict:
    tag_filter = [{"Name": f"tag:{TAG}bake-id", "Values": [bake_id]}]
    return {
        "instances": live_instances(ec2, bake_id),
        "key_pairs": ec2.describe_key_pairs(Filters=tag_filter)["KeyPairs"],
        "security_groups": ec2.describe_security_groups(Filters=tag_filter)["SecurityGroups"],
    }


def purge(ec2, bake_id: str) -> None:
    """Safety net after a failed test: remove a bake's resources with boto3 (no playbook run)."""
    left = temp_resources(ec2, bake_id)
    if left["instances"]:
        ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in left["instances"]])
    for key in left["key_pairs"]:
        ec2.delete_key_pair(KeyName=key["KeyName"])
    for group in left["security_groups"]:
        ec2.delete_security_group(GroupId=group["GroupId"])


def tags_of(resource: dict) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def builder_args(aws, tmp_path, **extra) -> dict:
    return {
        "base_ami": aws["base_ami"],
        "subnet_id": aws["subnet"],
        "ssh_cidr": "192.0.2.10/32",
        "private_key_path": str(tmp_path / "bake-key"),
        "wait_for_ssh": False,
        "poll_interval": 1,
        **extra,
    }


# ------------------------------------------------------------------------------------------------ the whole bake


@pytest.fixture(scope="module")
def baked(aws, tmp_path_factory):
    """One full bake through ami_bake.yml: cache miss -> builder -> captured (2 copies, shared) -> cleanup."""
    from conftest import run_playbook

    tmp_path = tmp_path_factory.mktemp("bake")
    fingerprint = f"sha256:{time.time_ns():x}"
    extra = {
        "ami_connection": aws["connection"],
        "ami_fingerprint": fingerprint,
        "ami_copy_regions": COPY_REGIONS,
        "ami_builder_args": builder_args(aws, tmp_path, region_kms_keys=KMS_KEYS),
        "ami_capture_args": {
            "name": f"web-1.0.0-{time.time_ns()}",
            "encrypted": True,
            "region_kms_keys": KMS_KEYS,
            "family": "web-flow",
            "revision": "abc1234",
            "share_accounts": [ACCOUNT],
            "share_organizations": [ORG],
            "tags": {"app": "web"},
            "poll_interval": 1,
        },
    }
    instances_before = len(live_instances(aws["ec2"]))
    proc, data = run(run_playbook, "ami_bake.yml", tmp_path, extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"extra": extra, "data": data, "proc": proc, "tmp": tmp_path, "instances_before": instances_before}


def test_cache_miss_bakes_copies_tags_and_shares_in_every_region(aws, baked):
    data = baked["data"]
    fingerprint = baked["extra"]["ami_fingerprint"]
    assert data["cache"]["hit"] is False and data["cache"]["amis"] == {}
    amis = data["captured"]["amis"]
    assert set(amis) == {REGION, *COPY_REGIONS}
    assert data["captured"]["changed"] is True
    for region, ami in amis.items():
        ec2 = ec2_client(aws["endpoint"], region)
        image = ec2.describe_images(ImageIds=[ami])["Images"][0]
        tags = tags_of(image)
        assert tags[f"{TAG}fingerprint"] == fingerprint
        assert tags[f"{TAG}bake-id"] == data["builder"]["bake_id"]
        assert tags[f"{TAG}revision"] == "abc1234" and tags[f"{TAG}family"] == "web-flow" and tags["app"] == "web"
        assert tags[f"{TAG}base-ami"] == aws["base_ami"]
        if region != REGION:
            assert tags[f"{TAG}source-ami"] == amis[REGION] and tags[f"{TAG}source-region"] == REGION
        perms = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")["LaunchPermissions"]
        assert {"UserId": ACCOUNT} in perms and {"OrganizationArn": ORG} in perms
        for mapping in image["BlockDeviceMappings"]:
            snap = mapping["Ebs"]["SnapshotId"]
            assert (
                tags_of(ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0])[f"{TAG}fingerprint"] == fingerprint
            )
            volume_perms = ec2.describe_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission")
            assert {"UserId": ACCOUNT} in volume_perms["CreateVolumePermissions"]
    # the source image records its copies, so a later cache lookup needs one call in one region
    source = aws["ec2"].describe_images(ImageIds=[amis[REGION]])["Images"][0]
    assert tags_of(source)[f"{TAG}copies"] == ",".join(f"{r}={amis[r]}" for r in sorted(COPY_REGIONS))


def test_cleanup_leaves_no_builder_key_pair_or_security_group(aws, baked):
    bake_id = baked["data"]["builder"]["bake_id"]
    removed = baked["data"]["cleanup"]["removed"][bake_id]
    assert len(removed["instances"]) == 1 and len(removed["key_pairs"]) == 1 and len(removed["security_groups"]) == 1
    assert temp_resources(aws["ec2"], bake_id) == {"instances": [], "key_pairs": [], "security_groups": []}
    assert not Path(baked["extra"]["ami_builder_args"]["private_key_path"]).exists()
    assert "PRIVATE KEY" not in baked["proc"].stdout and "PRIVATE KEY" not in json.dumps(baked["data"])


def test_cache_hit_launches_nothing(aws, baked, playbook, tmp_path):
    before = len(live_instances(aws["ec2"]))
    all_before = sum(len(r["Instances"]) for r in aws["ec2"].describe_instances()["Reservations"])
    proc, data = run(playbook, "ami_bake.yml", tmp_path, baked["extra"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data["cache"]["hit"] is True and data["cache"]["changed"] is False
    assert data["cache"]["amis"] == baked["data"]["captured"]["amis"]
    assert data["builder"].get("skipped") is True
    assert len(live_instances(aws["ec2"])) == before
    assert sum(len(r["Instances"]) for r in aws["ec2"].describe_instances()["Reservations"]) == all_before


def test_cache_lookup_reports_missing_region(aws, baked, playbook, tmp_path):
    args = {"state": "cached", "fingerprint": baked["extra"]["ami_fingerprint"], "copy_regions": ["ap-south-1"]}
    data = step(playbook, aws, tmp_path, args)
    assert data["hit"] is False and data["missing_regions"] == ["ap-south-1"]
    assert data["amis"][REGION] == baked["data"]["captured"]["amis"][REGION]


def test_captured_again_is_idempotent(aws, baked, playbook, tmp_path):
    capture = baked["extra"]["ami_capture_args"]
    args = {
        **capture,
        "state": "captured",
        "fingerprint": baked["extra"]["ami_fingerprint"],
        "copy_regions": COPY_REGIONS,
        "bake_id": baked["data"]["builder"]["bake_id"],
    }
    data = step(playbook, aws, tmp_path, args)
    assert data["changed"] is False, data["actions"]
    assert data["amis"] == baked["data"]["captured"]["amis"]


# ------------------------------------------------------------------------------------------------ builder


def test_builder_is_locked_down_and_check_mode_changes_nothing(aws, playbook, tmp_path, unique):
    ec2 = aws["ec2"]
    bake_id = f"lock-{unique}"
    args = {"state": "builder", "bake_id": bake_id, **builder_args(aws, tmp_path)}
    counts = (len(live_instances(ec2)), len(ec2.describe_key_pairs()["KeyPairs"]))
    planned = step(playbook, aws, tmp_path, args, "--check")
    assert planned["changed"] is True
    assert [a["action"] for a in planned["actions"]] == ["create_key_pair", "create_security_group", "run_instances"]
    assert (len(live_instances(ec2)), len(ec2.describe_key_pairs()["KeyPairs"])) == counts
    assert temp_resources(ec2, bake_id) == {"instances": [], "key_pairs": [], "security_groups": []}
    assert not Path(args["private_key_path"]).exists()
    try:
        data = step(playbook, aws, tmp_path, args)
        builder = data["builder"]
        assert data["changed"] is True and builder["bake_id"] == bake_id
        key_file = Path(builder["private_key_path"])
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert key_file.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert "PRIVATE KEY" not in json.dumps(data)
        instance = ec2.describe_instances(InstanceIds=[builder["instance_id"]])["Reservations"][0]["Instances"][0]
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert instance["KeyName"] == builder["key_name"] and instance["ImageId"] == aws["base_ami"]
        assert builder["address"] == instance["PrivateIpAddress"]
        volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}])
        assert volumes["Volumes"] and all(v["Encrypted"] for v in volumes["Volumes"])
        group = ec2.describe_security_groups(GroupIds=[builder["security_group_id"]])["SecurityGroups"][0]
        assert [(p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in group["IpPermissions"]] == [
            (22, 22, ["192.0.2.10/32"])
        ]
        for resource in (instance, group):
            assert tags_of(resource)[f"{TAG}bake-id"] == bake_id and f"{TAG}created" in tags_of(resource)
        # same bake_id again: the running builder is returned, nothing new is launched
        again = step(playbook, aws, tmp_path, args)
        assert again["changed"] is False and again["builder"]["instance_id"] == builder["instance_id"]
        assert len(temp_resources(ec2, bake_id)["instances"]) == 1
        # cleanup in check mode lists, changes nothing; then for real; then idempotent
        absent = {
            "state": "absent",
            "bake_id": bake_id,
            "private_key_path": args["private_key_path"],
            "poll_interval": 1,
        }
        listed = step(playbook, aws, tmp_path, absent, "--check")
        assert listed["changed"] is True and listed["removed"][bake_id]["instances"] == [builder["instance_id"]]
        assert len(temp_resources(ec2, bake_id)["instances"]) == 1 and key_file.exists()
        assert step(playbook, aws, tmp_path, absent)["changed"] is True
        assert temp_resources(ec2, bake_id) == {"instances": [], "key_pairs": [], "security_groups": []}
        assert step(playbook, aws, tmp_path, absent)["changed"] is False
    finally:
        purge(aws["ec2"], bake_id)


def test_builder_never_answering_ssh_is_removed(aws, playbook, tmp_path, unique):
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bake_id = f"nossh-{unique}"
    args = {
        "state": "builder",
        "bake_id": bake_id,
        **builder_args(aws, tmp_path),
        "wait_for_ssh": True,
        "ssh_host": "127.0.0.1",
        "ssh_port": port,
        "ssh_timeout": 2,
    }
    data = step(playbook, aws, tmp_path, args, expect_failure=True)
    assert data["failed"] is True
    assert f"did not answer SSH on 127.0.0.1:{port} within 2s" in data["msg"]
    assert "were removed" in data["msg"]
    assert temp_resources(aws["ec2"], bake_id) == {"instances": [], "key_pairs": [], "security_groups": []}
    assert not Path(args["private_key_path"]).exists()


def test_base_ami_filter_picks_most_recent(aws, playbook, tmp_path, unique):
    ec2 = aws["ec2"]
    ids = []
    for _unused in range(2):
        ids.append(ec2.register_image(Name=f"flt-{unique}-{len(ids)}", RootDeviceName="/dev/xvda")["ImageId"])
        time.sleep(1.1)  # moto's CreationDate has 1-second granularity
    bake_id = f"flt-{unique}"
    args = {"state": "builder", "bake_id": bake_id, **builder_args(aws, tmp_path)}
    args.pop("base_ami")
    args["base_ami_filter"] = {"name": f"flt-{unique}-*", "owners": ["self"]}
    try:
        data = step(playbook, aws, tmp_path, args)
        assert data["builder"]["base_ami"] == ids[-1]
    finally:
        purge(aws["ec2"], bake_id)


# ------------------------------------------------------------------------------------------------ orphans


def test_orphan_sweep_removes_only_old_bakes(aws, playbook, tmp_path, unique):
    region = "ap-southeast-2"  # a region of its own: the sweep removes every old bake in its region
    ec2 = ec2_client(aws["endpoint"], region)
    vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.1.0/24")["Subnet"]["SubnetId"]
    base = ec2.register_image(Name=f"orph-base-{unique}", RootDeviceName="/dev/xvda")["ImageId"]
    connection = {**aws["connection"], "region": region}
    bake_id = f"orphan-{unique}"
    args = {
        "state": "builder",
        "bake_id": bake_id,
        **builder_args(aws, tmp_path),
        "base_ami": base,
        "subnet_id": subnet,
    }
    step(playbook, aws, tmp_path, args, connection=connection)  # a "killed" run: never cleaned up
    os.unlink(args["private_key_path"])
    sweep = {"state": "absent", "poll_interval": 1}
    young = step(playbook, aws, tmp_path, {**sweep, "orphan_min_age": 3600}, connection=connection)
    assert young["changed"] is False and young["removed"] == {}
    assert len(temp_resources(ec2, bake_id)["instances"]) == 1
    listed = step(playbook, aws, tmp_path, {**sweep, "orphan_min_age": 0}, "--check", connection=connection)
    assert listed["changed"] is True and set(listed["removed"]) == {bake_id}
    assert all(len(v) == 1 for v in listed["removed"][bake_id].values())
    assert len(temp_resources(ec2, bake_id)["instances"]) == 1
    swept = step(playbook, aws, tmp_path, {**sweep, "orphan_min_age": 0}, connection=connection)
    assert swept["removed"] == listed["removed"]
    assert temp_resources(ec2, bake_id) == {"instances": [], "key_pairs": [], "security_groups": []}
    assert step(playbook, aws, tmp_path, {**sweep, "orphan_min_age": 0}, connection=connection)["changed"] is False


# ------------------------------------------------------------------------------------------------ retention


def test_retention_keeps_newest_and_skips_protected_and_launch_template_images(aws, playbook, tmp_path, unique):
    ec2 = aws["ec2"]
    family = f"ret-{unique}"
    ids = []
    for n in range(5):  # oldest first
        image_id = ec2.register_image(Name=f"{family}-{n}", RootDeviceName="/dev/xvda")["ImageId"]
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": f"{TAG}family", "Value": family}])  # moto drops tag specs
        ids.append(image_id)
        time.sleep(1.1)  # distinct CreationDate (1-second granularity in moto)
    oldest, protected, doomed = ids[0], ids[1], ids[2]
    doomed_snaps = [
        m["Ebs"]["SnapshotId"] for m in ec2.describe_images(ImageIds=[doomed])["Images"][0]["BlockDeviceMappings"]
    ]
    assert doomed_snaps
    ec2.create_launch_template(LaunchTemplateName=f"lt-{unique}", LaunchTemplateData={"ImageId": oldest})
    args = {"state": "retained", "family": family, "keep": 2, "protected_ids": [protected]}

    planned = step(playbook, aws, tmp_path, args, "--check")
    assert planned["changed"] is True and [d["image_id"] for d in planned["deregister"]] == [doomed]
    assert len(ec2.describe_images(ImageIds=ids)["Images"]) == 5

    data = step(playbook, aws, tmp_path, args)
    assert data["kept"] == [ids[4], ids[3]]
    assert [d["image_id"] for d in data["deregister"]] == [doomed]
    assert data["deregister"][0]["snapshot_ids"] == doomed_snaps
    reasons = {s["image_id"]: s["reason"] for s in data["skipped"]}
    assert reasons[protected].startswith("protected")
    assert reasons[oldest] == f"referenced by launch template lt-{unique} version 1"
    remaining = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert doomed not in remaining and {ids[0], ids[1], ids[3], ids[4]} <= remaining
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(doomed_snaps) & left

    again = step(playbook, aws, tmp_path, args)
    assert again["changed"] is False and again["deregister"] == []


def test_gc_ami_keeps_ledger_instance_launch_configuration_and_every_template_version_images(
    aws, playbook, tmp_path, unique
):
    """playbooks/gc_ami.yml with the SSM ledger (on the same moto_server): of six old images of the family only the
    one nothing uses goes; the newest stays (keep 1)."""
    import boto3

    from ansible_collections.immutable.infra.plugins.module_utils.ledger._ssm import SsmLedger

    ec2, family = aws["ec2"], f"gc-{unique}"
    names = ["live", "previous", "instance", "launch-config", "old-template-version", "doomed", "newest"]
    ids = {}
    for name in names:
        if name == "newest":
            time.sleep(1.1)  # a later CreationDate (1-second granularity in moto)
        ids[name] = ec2.register_image(Name=f"{family}-{name}", RootDeviceName="/dev/xvda")["ImageId"]
        ec2.create_tags(Resources=[ids[name]], Tags=[{"Key": f"{TAG}family", "Value": family}])
    clients = {"endpoint_url": aws["endpoint"], "region_name": REGION, **FAKE_KEYS}
    ssm = boto3.client("ssm", **clients)
    prefix = f"/immutable-infra-test/{unique}/ledger"
    ledger = SsmLedger(ssm, prefix)
    ledger.record("web", "prod", {REGION: ids["previous"], "eu-west-1": "ami-0aaaaaaaaaaaaaaaa"}, "deploy", "ci@t")
    ledger.record("web", "prod", {REGION: ids["live"], "eu-west-1": "ami-0bbbbbbbbbbbbbbbb"}, "deploy", "ci@t")
    reservation = ec2.run_instances(ImageId=ids["instance"], MinCount=1, MaxCount=1, SubnetId=aws["subnet"])
    instance_id = reservation["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance_id])  # a stopped instance still needs its image
    autoscaling = boto3.client("autoscaling", **clients)
    autoscaling.create_launch_configuration(
        LaunchConfigurationName=f"lc-{unique}", ImageId=ids["launch-config"], InstanceType="t3.micro"
    )
    template = f"lt-gc-{unique}"
    ec2.create_launch_template(LaunchTemplateName=template, LaunchTemplateData={"ImageId": ids["old-template-version"]})
    ec2.create_launch_template_version(LaunchTemplateName=template, LaunchTemplateData={"ImageId": aws["base_ami"]})
    ec2.modify_launch_template(LaunchTemplateName=template, DefaultVersion="2")  # version 1 is an old version now
    extra = {
        "gc_app": "web",
        "gc_ami_family": family,
        "gc_keep": 1,
        "gc_ami_regions": [REGION],
        "gc_aws": aws["connection"],
        "gc_ledger": {"backend": "ssm", "prefix": prefix, "region": REGION, "endpoint_url": aws["endpoint"]},
    }
    gc_ami = Path(__file__).resolve().parents[2] / "playbooks" / "gc_ami.yml"
    images_before = len(ec2.describe_images(ImageIds=list(ids.values()))["Images"])
    checked = playbook(gc_ami, {**extra, "gc_delete": True}, "--check", env=AWS_ENV)  # check mode is a dry run too
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    assert "DRY RUN (set gc_delete=true to delete): would deregister 1 AMI(s)" in " ".join(checked.stdout.split())
    assert len(ec2.describe_images(ImageIds=list(ids.values()))["Images"]) == images_before == len(ids)

    real = playbook(gc_ami, {**extra, "gc_delete": True}, env=AWS_ENV)
    assert real.returncode == 0, real.stdout[-4000:] + real.stderr[-2000:]
    said = " ".join(real.stdout.split())
    assert f"deregistered 1 AMI(s) of family {family}: {ids['doomed']};" in said
    for reason in (
        f"{ids['live']} (protected (listed in protected_ids))",
        f"{ids['previous']} (protected (listed in protected_ids))",
        f"{ids['instance']} (referenced by instance {instance_id} (stopped))",
        f"{ids['launch-config']} (referenced by launch configuration lc-{unique})",
        f"{ids['old-template-version']} (referenced by launch template {template} version 1)",
    ):
        assert reason in said, reason
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert ids["doomed"] not in left and {v for k, v in ids.items() if k != "doomed"} <= left


# ------------------------------------------------------------------------------------------------ check mode, errors


def test_captured_check_mode_creates_nothing(aws, playbook, tmp_path, unique):
    ec2 = aws["ec2"]
    bake_id = f"chk-{unique}"
    step(playbook, aws, tmp_path, {"state": "builder", "bake_id": bake_id, **builder_args(aws, tmp_path)})
    try:
        images_before = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
        args = {
            "state": "captured",
            "bake_id": bake_id,
            "fingerprint": f"sha256:{unique}",
            "name": f"chk-{unique}",
            "copy_regions": COPY_REGIONS,
        }
        data = step(playbook, aws, tmp_path, args, "--check")
        assert data["changed"] is True
        assert [a["action"] for a in data["actions"]] == ["stop_instance", "create_image", "copy_image", "copy_image"]
        assert {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]} == images_before
        assert live_instances(ec2, bake_id)[0]["State"]["Name"] == "running"
    finally:
        purge(aws["ec2"], bake_id)


BAD_CASES = [
    (
        "short-name",
        {"state": "captured", "fingerprint": "sha256:x", "bake_id": "b", "name": "ab"},
        "invalid AMI name 'ab'",
    ),
    (
        "bad-chars",
        {"state": "captured", "fingerprint": "sha256:x", "bake_id": "b", "name": "web#1"},
        "invalid AMI name",
    ),
    (
        "account",
        {"state": "captured", "fingerprint": "sha256:x", "bake_id": "b", "name": "web-1", "share_accounts": ["12345"]},
        "invalid account id(s) in share_accounts: 12345; AWS account ids are 12 digits",
    ),
    (
        "kms",
        {
            "state": "captured",
            "fingerprint": "sha256:x",
            "bake_id": "b",
            "name": "web-1",
            "copy_regions": ["eu-west-1", "us-west-2"],
            "encrypted": True,
            "region_kms_keys": {"eu-west-1": "alias/ami"},
        },
        "no KMS key for region(s) us-west-2",
    ),
    (
        "share-default-key",
        {
            "state": "cached",
            "fingerprint": "sha256:x",
            "copy_regions": ["eu-west-1"],
            "encrypted": True,
            "region_kms_keys": {"eu-west-1": "alias/aws/ebs"},
            "share_accounts": [ACCOUNT],
        },
        "no key in region_kms_keys for us-east-1 (so the default aws/ebs key) and an AWS managed key for"
        " eu-west-1=alias/aws/ebs: an image encrypted with the aws/ebs key cannot be launched in another account."
        " Create a customer-managed key per region",
    ),
    ("region", {"state": "cached", "fingerprint": "sha256:x", "region": "mars-1"}, "unknown region 'mars-1'"),
    ("copy-region", {"state": "cached", "fingerprint": "sha256:x", "copy_regions": ["eu-nowhere-9"]}, "eu-nowhere-9"),
    (
        "filter",
        {
            "state": "builder",
            "base_ami_filter": {"name": "no-such-image-*"},
            "ssh_cidr": "192.0.2.1/32",
            "private_key_path": "/tmp/unused-key",
            "wait_for_ssh": False,
        },
        "base_ami_filter matched no available image (name='no-such-image-*', owners=['self'])",
    ),
    (
        "no-builder",
        {"state": "captured", "fingerprint": "sha256:none", "bake_id": "gone", "name": "web-1"},
        "no live builder",
    ),
    ("retained", {"state": "retained"}, "needs family (tag) or name_prefix"),
]


def test_bad_inputs_fail_clearly_before_anything_starts(aws, playbook, tmp_path):
    ec2 = aws["ec2"]
    counts = (len(live_instances(ec2)), len(ec2.describe_key_pairs()["KeyPairs"]), len(ec2.describe_images()["Images"]))
    cases = [{"id": case_id, "args": args} for case_id, args, _unused in BAD_CASES]
    proc, results = run(playbook, "ami_errors.yml", tmp_path, {"ami_connection": aws["connection"], "ami_cases": cases})
    assert results is not None, proc.stdout + proc.stderr
    by_id = {r["item"]["id"]: r for r in results}
    for case_id, _unused, expected in BAD_CASES:
        assert by_id[case_id].get("failed") is True, (case_id, by_id[case_id])
        assert expected in by_id[case_id]["msg"], (case_id, by_id[case_id]["msg"])
    counts_after = (
        len(live_instances(ec2)),
        len(ec2.describe_key_pairs()["KeyPairs"]),
        len(ec2.describe_images()["Images"]),
    )
    assert counts_after == counts


def test_no_credentials_fails_with_amazon_aws_message(aws, playbook, tmp_path):
    connection = {"endpoint_url": aws["endpoint"], "region": REGION}  # no keys in the task ...
    no_keys = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": ""}  # ... nor the env
    args = {"state": "cached", "fingerprint": "sha256:x"}
    data = step(playbook, aws, tmp_path, args, expect_failure=True, connection=connection, env=no_keys)
    assert data["failed"] is True
    assert "Unable to locate credentials" in data["msg"], data["msg"]
