"""Unit tests for plugins/module_utils/bake/_ami.py: what moto_server cannot show, with botocore's Stubber.

moto has no pending images, accepts duplicate AMI names, never throttles and cannot fail one region's copy; these
tests stub those AWS answers. Planners are tested as plain functions.
"""

from __future__ import annotations

import datetime
import http.server
import socket
import threading
import time

import boto3
import pytest
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from botocore.stub import ANY
from botocore.stub import Stubber

from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _builder
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _cache
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _capture
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _cleanup
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _common
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _retention
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _run
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _validation
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import AmiError

REGION = "eu-west-1"
FP = "sha256:feedbeef"


def stubbed(region: str = REGION):
    client = boto3.client("ec2", region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = Stubber(client)
    stub.activate()
    return RetryingBotoClientWrapper(client, AWSRetry.jittered_backoff(retries=3, delay=0)), stub


def image(image_id: str, state: str = "available", tags: dict | None = None, snaps=(), name="web-1") -> dict:
    return {
        "ImageId": image_id,
        "State": state,
        "Name": name,
        "CreationDate": "2026-01-01T00:00:00.000Z",
        "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": s}} for s in snaps],
    }


def instance(instance_id: str, state: str) -> dict:
    return {
        "Reservations": [{"Instances": [{"InstanceId": instance_id, "ImageId": "ami-base", "State": {"Name": state}}]}]
    }


PARAMS = {
    "fingerprint": FP,
    "bake_id": "b1",
    "name": "web-1",
    "family": "web",
    "wait_timeout": 30,
    "copy_regions": [],
    "share_accounts": [],
    "share_organizations": [],
    "share_ous": [],
}


def own_tags(**extra) -> dict:
    tags = {
        _common.TAG_FINGERPRINT: FP,
        _common.TAG_ROLE: _common.ROLE_IMAGE,
        _common.TAG_CREATED: "2026-01-01T00:00:00Z",
        _common.TAG_BAKE_ID: "b1",
        _common.TAG_FAMILY: "web",
        _common.TAG_BASE_AMI: "ami-base",
    }
    tags.update(extra)
    return tags


# ------------------------------------------------------------------------------------------------ waits


def test_capture_waits_from_pending_to_available_then_tags_snapshots():
    ec2, stub = stubbed()
    stub.add_response("describe_images", {"Images": []})  # no image with the fingerprint yet
    stub.add_response("describe_instances", instance("i-1", "running"))
    stub.add_response("stop_instances", {}, {"InstanceIds": ["i-1"]})
    stub.add_response("describe_instances", instance("i-1", "stopping"))  # waiter poll 1
    stub.add_response("describe_instances", instance("i-1", "stopped"))  # waiter poll 2
    stub.add_response(
        "create_image",
        {"ImageId": "ami-new"},
        {"InstanceId": "i-1", "Name": "web-1", "Description": ANY, "TagSpecifications": ANY},
    )
    stub.add_response("describe_images", {"Images": [image("ami-new", "pending")]})  # waiter poll 1
    stub.add_response("describe_images", {"Images": [image("ami-new", "pending")]})  # waiter poll 2
    stub.add_response("describe_images", {"Images": [image("ami-new", "available")]})  # waiter poll 3
    stub.add_response("describe_images", {"Images": [image("ami-new", tags=own_tags(), snaps=["snap-1"])]})
    stub.add_response("describe_snapshots", {"Snapshots": [{"SnapshotId": "snap-1", "Tags": []}]})
    stub.add_response("create_tags", {}, {"Resources": ["snap-1"], "Tags": ANY})
    result = _capture.Capture(ec2, REGION, lambda r: None, check_mode=False, poll_interval=0).run(PARAMS)
    stub.assert_no_pending_responses()
    assert result["amis"] == {REGION: "ami-new"} and result["changed"] is True
    assert [a["action"] for a in result["actions"]] == ["stop_instance", "create_image", "tag_snapshots"]


def test_image_wait_times_out_with_a_clear_message():
    ec2, stub = stubbed()
    for _unused in range(3):
        stub.add_response("describe_images", {"Images": [image("ami-slow", "pending")]})
    capture = _capture.Capture(ec2, REGION, lambda r: None, check_mode=False, poll_interval=1)
    with pytest.raises(AmiError, match=r"Timed out after 3s waiting for image ami-slow .* raise wait_timeout"):
        capture.wait_available(ec2, "ami-slow", 3, REGION)


def test_image_that_fails_reports_failure():
    ec2, stub = stubbed()
    stub.add_response("describe_images", {"Images": [image("ami-bad", "failed")]})
    capture = _capture.Capture(ec2, REGION, lambda r: None, check_mode=False, poll_interval=0)
    with pytest.raises(AmiError, match="Failed waiting for image ami-bad"):
        capture.wait_available(ec2, "ami-bad", 30, REGION)


# ------------------------------------------------------------------------------------------------ duplicate name


def _duplicate_setup(found_tags: dict):
    ec2, stub = stubbed()
    stub.add_response("describe_images", {"Images": []})
    stub.add_response("describe_instances", instance("i-1", "stopped"))
    stub.add_response("describe_instances", instance("i-1", "stopped"))  # instance_stopped waiter
    stub.add_client_error("create_image", "InvalidAMIName.Duplicate", "AMI name web-1 is already in use by AMI ami-old")
    stub.add_response(
        "describe_images",
        {"Images": [image("ami-old", tags=found_tags)]},
        {"Owners": ["self"], "Filters": [{"Name": "name", "Values": ["web-1"]}]},
    )
    return ec2, stub


def test_duplicate_name_with_our_fingerprint_is_reused():
    ec2, stub = _duplicate_setup(own_tags())
    stub.add_response("describe_images", {"Images": [image("ami-old", tags=own_tags())]})  # waiter
    stub.add_response("describe_images", {"Images": [image("ami-old", tags=own_tags())]})  # describe
    result = _capture.Capture(ec2, REGION, lambda r: None, check_mode=False, poll_interval=0).run(PARAMS)
    stub.assert_no_pending_responses()
    assert result["amis"] == {REGION: "ami-old"}
    assert result["actions"][-1] == {
        "action": "create_image",
        "name": "web-1",
        "instance_id": "i-1",
        "reused": "ami-old",
    }


def test_duplicate_name_of_another_bake_fails_clearly():
    ec2, stub = _duplicate_setup({_common.TAG_FINGERPRINT: "sha256:other"})
    with pytest.raises(AmiError, match=r"an image named 'web-1' already exists \(ami-old\) without fingerprint"):
        _capture.Capture(ec2, REGION, lambda r: None, check_mode=False, poll_interval=0).run(PARAMS)


# ------------------------------------------------------------------------------------------------ throttling


def test_throttling_is_retried_and_a_hit_costs_one_successful_call():
    ec2, stub = stubbed()
    stub.add_client_error("describe_images", "RequestLimitExceeded", "Request limit exceeded.")
    stub.add_client_error("describe_images", "Throttling", "Rate exceeded")
    copies = _common.encode_copies({"us-east-1": "ami-use1"})
    stub.add_response("describe_images", {"Images": [image("ami-src", tags={**own_tags(), **copies})]})
    result = _cache.CacheLookup(ec2, REGION).run(FP, ["us-east-1"])
    stub.assert_no_pending_responses()
    assert result["hit"] is True and result["amis"] == {REGION: "ami-src", "us-east-1": "ami-use1"}


def test_throttling_beyond_the_retries_fails_with_the_aws_error():
    ec2, stub = stubbed()
    for _unused in range(3):
        stub.add_client_error("describe_images", "RequestLimitExceeded", "Request limit exceeded.")
    with pytest.raises(AmiError) as err:
        _cache.CacheLookup(ec2, REGION).run(FP, [])
    assert err.value.message.startswith("Failed to look up images tagged immutable-infra:fingerprint=")
    assert err.value.original.response["Error"]["Code"] == "RequestLimitExceeded"


# ------------------------------------------------------------------------------------------------ one region fails


def test_copy_failing_in_one_region_keeps_the_others_and_names_the_region():
    ec2, stub = stubbed()
    source_tags = own_tags()
    stub.add_response("describe_images", {"Images": [image("ami-src", tags=source_tags)]})  # found by fingerprint
    ok, ok_stub = stubbed("us-east-1")
    bad, bad_stub = stubbed("ap-south-1")
    copy_tags = {
        **source_tags,
        _common.TAG_SOURCE_AMI: "ami-src",
        _common.TAG_SOURCE_REGION: REGION,
    }
    ok_stub.add_response("describe_images", {"Images": []})
    ok_stub.add_response(
        "copy_image",
        {"ImageId": "ami-use1"},
        {"SourceImageId": "ami-src", "SourceRegion": REGION, "Name": "web-1", "Description": ANY, "ClientToken": ANY},
    )
    ok_stub.add_response("create_tags", {}, {"Resources": ["ami-use1"], "Tags": ANY})
    ok_stub.add_response("describe_images", {"Images": [image("ami-use1", "available")]})  # waiter
    ok_stub.add_response("describe_images", {"Images": [image("ami-use1", tags=copy_tags)]})
    bad_stub.add_response("describe_images", {"Images": []})
    bad_stub.add_client_error("copy_image", "InvalidRequest", "Region ap-south-1 is not enabled for this account")
    stub.add_response(
        "create_tags",
        {},
        {"Resources": ["ami-src"], "Tags": [{"Key": _common.TAG_COPIES, "Value": "us-east-1=ami-use1"}]},
    )
    clients = {"us-east-1": ok, "ap-south-1": bad}
    capture = _capture.Capture(ec2, REGION, clients.__getitem__, check_mode=False, poll_interval=0)
    with pytest.raises(AmiError) as err:
        capture.run({**PARAMS, "copy_regions": ["us-east-1", "ap-south-1"]})
    for s in (stub, ok_stub, bad_stub):
        s.assert_no_pending_responses()
    assert "copying the image failed in region(s) ap-south-1" in err.value.message
    assert "not enabled" in err.value.message and "re-run the same task" in err.value.message
    assert set(err.value.result["failed_regions"]) == {"ap-south-1"}
    assert err.value.result["amis"] == {REGION: "ami-src", "us-east-1": "ami-use1"}


# ------------------------------------------------------------------------------------------------ copies: KMS, parallel

KEYS = {
    "us-east-1": "arn:aws:kms:us-east-1:111122223333:key/1111aaaa-0000-4000-8000-000000000001",
    "us-west-2": "alias/web-ami",
    "ap-south-1": "arn:aws:kms:ap-south-1:111122223333:alias/web-ami",
    "sa-east-1": "2222bbbb-0000-4000-8000-000000000002",
}
COPY_TAGS = {**own_tags(), _common.TAG_SOURCE_AMI: "ami-src", _common.TAG_SOURCE_REGION: REGION}


def expect_copy(stub, region: str, request: dict) -> None:
    """One region's copy as moto cannot check it: the exact CopyImage request, then tag, wait, describe."""
    stub.add_response("describe_images", {"Images": []})  # no copy with the fingerprint there yet
    stub.add_response("copy_image", {"ImageId": f"ami-{region}"}, request)
    stub.add_response("create_tags", {}, {"Resources": [f"ami-{region}"], "Tags": ANY})
    stub.add_response("describe_images", {"Images": [image(f"ami-{region}", "available")]})  # waiter
    stub.add_response("describe_images", {"Images": [image(f"ami-{region}", tags=COPY_TAGS)]})


def copy_request(region: str, encrypted: bool) -> dict:
    request = {"SourceImageId": "ami-src", "SourceRegion": REGION, "Name": "web-1", "Description": ANY}
    request["ClientToken"] = ANY
    if encrypted:
        request.update({"Encrypted": True, "KmsKeyId": KEYS[region]})
    return request


def run_copies(regions: list[str], encrypted: bool, hold=None) -> tuple[dict, list]:
    """Capture.run with a source found by fingerprint and one stubbed client per copy region; each CopyImage call
    first runs `hold` (a botocore before-call hook, as a slow AWS answer would). Returns (result, the (start, end)
    of every CopyImage call)."""
    ec2, stub = stubbed()
    stub.add_response("describe_images", {"Images": [image("ami-src", tags=own_tags())]})
    stub.add_response("create_tags", {}, {"Resources": ["ami-src"], "Tags": ANY})  # records the copies
    clients, stubs, calls = {}, [stub], []
    for region in regions:
        client, region_stub = stubbed(region)
        expect_copy(region_stub, region, copy_request(region, encrypted))

        def slow(**_kwargs):
            start = time.monotonic()
            if hold is not None:
                hold()
            calls.append((start, time.monotonic()))

        client.meta.events.register("before-parameter-build.ec2.CopyImage", slow)
        clients[region], stubs = client, [*stubs, region_stub]
    params = {**PARAMS, "copy_regions": regions, "encrypted": encrypted, "region_kms_keys": dict(KEYS)}
    result = _capture.Capture(ec2, REGION, clients.__getitem__, check_mode=False, poll_interval=0).run(params)
    for each in stubs:
        each.assert_no_pending_responses()  # every expected CopyImage request (Encrypted, KmsKeyId) was made
    return result, calls


def test_encrypted_copies_send_each_regions_own_kms_key():
    regions = list(KEYS)
    result, _calls = run_copies(regions, encrypted=True)
    assert result["amis"] == {REGION: "ami-src", **{r: f"ami-{r}" for r in regions}}
    planned = {a["region"]: a["kms_key_id"] for a in result["actions"] if a["action"] == "copy_image"}
    assert planned == KEYS


def test_unencrypted_copies_send_no_kms_key():
    result, _calls = run_copies(["us-west-2"], encrypted=False)  # the Stubber refuses Encrypted/KmsKeyId here
    assert result["amis"]["us-west-2"] == "ami-us-west-2"


def test_copies_to_four_regions_run_in_parallel():
    # each CopyImage answer is held until all four are in flight: copies made one after the other never get there
    # (the barrier times out and the copy fails), so no wall-clock bound is needed on a busy machine
    in_flight = threading.Barrier(4, timeout=30)
    result, calls = run_copies(list(KEYS), encrypted=True, hold=in_flight.wait)
    assert len(calls) == 4
    assert sorted(result["amis"]) == sorted([REGION, *KEYS])
    # every copy started before any finished: all four were in flight at once
    assert max(start for start, _end in calls) < min(end for _start, end in calls)


# ------------------------------------------------------------------------------------------------ planners


def test_plan_retention_keeps_newest_and_explains_skips():
    images = [image(f"ami-{n}") | {"CreationDate": f"2026-01-0{n}T00:00:00.000Z"} for n in range(1, 6)]
    images[2]["BlockDeviceMappings"] = [{"Ebs": {"SnapshotId": "snap-3"}}]
    plan = _retention.plan_retention(images, 2, {"ami-2"}, {"ami-1": "launch template web version 4"})
    assert plan["kept"] == ["ami-5", "ami-4"]
    assert plan["deregister"] == [
        {"image_id": "ami-3", "name": "web-1", "created": "2026-01-03T00:00:00.000Z", "snapshot_ids": ["snap-3"]}
    ]
    assert plan["skipped"] == [
        {"image_id": "ami-2", "reason": "protected (listed in protected_ids)"},
        {"image_id": "ami-1", "reason": "referenced by launch template web version 4"},
    ]


def test_plan_orphans_leaves_bakes_with_any_young_resource():
    now = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)

    def tagged(bake, age):
        created = _common.iso(now - datetime.timedelta(seconds=age))
        return [{"Key": _common.TAG_BAKE_ID, "Value": bake}, {"Key": _common.TAG_CREATED, "Value": created}]

    instances = [
        {"InstanceId": "i-old", "Tags": tagged("old", 7200)},
        {"InstanceId": "i-new", "Tags": tagged("new", 60)},
    ]
    keys = [{"KeyName": "k-old", "Tags": tagged("old", 7200)}, {"KeyName": "k-mixed", "Tags": tagged("mixed", 7200)}]
    groups = [
        {"GroupId": "sg-mixed", "Tags": tagged("mixed", 10)},
        {"GroupId": "sg-untimed", "Tags": [{"Key": _common.TAG_BAKE_ID, "Value": "u"}]},
    ]
    plan = _cleanup.plan_orphans(instances, keys, groups, now, 3600)
    assert set(plan) == {"old"}
    assert [i["InstanceId"] for i in plan["old"]["instances"]] == ["i-old"]


def test_plan_launch_permissions_adds_only_missing():
    current = [{"UserId": "111122223333"}, {"OrganizationArn": "arn:org"}]
    add = _capture.plan_launch_permissions(current, ["111122223333", "444455556666"], ["arn:org"], ["arn:ou"])
    assert add == [{"UserId": "444455556666"}, {"OrganizationalUnitArn": "arn:ou"}]


def test_copies_tag_round_trips_and_splits_at_256_characters():
    amis = {f"r{n:02d}-west-1": f"ami-{n:017x}" for n in range(20)}
    tags = _common.encode_copies(amis)
    assert len(tags) > 1 and all(len(v) <= 256 for v in tags.values())
    assert _common.decode_copies(tags) == amis


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("name", ["web-1.0", "web (2026) [x] a/b_c@d'e", "a" * 128])
def test_valid_ami_names(name):
    _validation.validate_ami_name(name)


@pytest.mark.parametrize("name", ["ab", "a" * 129, "web#1", "web:1", "wéb-1", None])
def test_invalid_ami_names(name):
    with pytest.raises(AmiError, match="invalid AMI name"):
        _validation.validate_ami_name(name)


def test_accounts_kms_and_org_validation():
    with pytest.raises(AmiError, match="1234567890123"):
        _validation.validate_accounts(["111122223333", "1234567890123"])
    with pytest.raises(AmiError, match=r"region\(s\) us-west-2"):
        _validation.check_kms_coverage(["eu-west-1", "us-west-2"], {"eu-west-1": "alias/x"}, True)
    _validation.check_kms_coverage(["us-west-2"], {}, False)
    with pytest.raises(AmiError, match="share_organizations"):
        _validation.validate_org_arns(["o-123"], [])
    with pytest.raises(AmiError, match="unknown region 'eu-west-9'"):
        _validation.validate_regions(["eu-west-9"], {"eu-west-1"}, "copy_regions")


SHARE_CASES = [
    ({"share_accounts": ["111122223333"]}, r"no key in region_kms_keys for eu-west-1, us-east-1 \(so the default"),
    (
        {
            "share_ous": ["arn:aws:organizations::123456789012:ou/o-abc123def4/ou-ab12-cdef3456"],
            "encrypted": True,
            "region_kms_keys": {REGION: "alias/aws/ebs", "us-east-1": "alias/web"},
        },
        r"an AWS managed key for eu-west-1=alias/aws/ebs",
    ),
    (
        {
            "share_accounts": ["111122223333"],
            "encrypted": True,
            "region_kms_keys": {REGION: "alias/web", "us-east-1": "arn:aws:kms:us-east-1:111122223333:alias/aws/ebs"},
        },
        r"an AWS managed key for us-east-1=arn:aws:kms:us-east-1:111122223333:alias/aws/ebs",
    ),
    (
        {
            "share_organizations": ["arn:aws:organizations::123456789012:organization/o-abc123def4"],
            "region_kms_keys": {REGION: "alias/web", "us-east-1": "alias/web"},
        },
        "sharing with copy_regions needs encrypted: true",
    ),
]


@pytest.mark.parametrize("state", ["cached", "captured"])
@pytest.mark.parametrize(("extra", "message"), SHARE_CASES)
def test_sharing_an_image_under_the_default_ebs_key_is_refused_before_anything(state, extra, message):
    params = {**PARAMS, "copy_regions": ["us-east-1"], **extra}
    with pytest.raises(AmiError, match=message) as err:
        _run.validate(state, params, REGION, {REGION, "us-east-1"})
    assert "customer-managed" in err.value.message


def test_sharing_with_a_customer_managed_key_in_every_region_is_accepted():
    keys = {REGION: "alias/web-ami", "us-east-1": KEYS["us-east-1"]}
    params = {**PARAMS, "copy_regions": ["us-east-1"], "share_accounts": ["111122223333"], "encrypted": True}
    _run.validate("captured", {**params, "region_kms_keys": keys}, REGION, {REGION, "us-east-1"})
    _run.validate("captured", {**PARAMS, "share_accounts": ["111122223333"], "region_kms_keys": keys}, REGION, None)


def test_validate_checks_kms_before_anything(tmp_path):
    params = {**PARAMS, "copy_regions": ["us-east-1"], "encrypted": True, "region_kms_keys": {REGION: "alias/a"}}
    with pytest.raises(AmiError, match=r"no KMS key for region\(s\) us-east-1"):
        _run.validate("captured", params, REGION, {REGION, "us-east-1"})


# ------------------------------------------------------------------------------------------------ controller side


def test_detect_controller_ip_from_a_local_check_url():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"198.51.100.7\n")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        from ansible.module_utils.urls import open_url

        url = f"http://127.0.0.1:{server.server_port}/"
        assert _builder.detect_controller_ip(lambda u: open_url(u, timeout=5).read().decode(), url) == "198.51.100.7/32"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(AmiError, match="set ssh_cidr"):
        _builder.detect_controller_ip(lambda u: "not an address", "http://x")


def test_ssh_banner_probe():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve():
        conn, _unused = listener.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        assert _builder.wait_for_ssh_banner("127.0.0.1", port, 5) is True
    finally:
        listener.close()
    started = time.monotonic()
    assert _builder.wait_for_ssh_banner("127.0.0.1", port, 1, interval=0.2) is False
    assert time.monotonic() - started < 3


# ------------------------------------------------------------------------------------------------ builder details


def test_security_group_deletion_waits_out_dependency_violation():
    ec2, stub = stubbed()
    stub.add_client_error("delete_security_group", "DependencyViolation", "resource sg-1 has a dependent object")
    stub.add_response("delete_security_group", {}, {"GroupId": "sg-1"})
    _cleanup.Cleanup(ec2, REGION, check_mode=False, poll_interval=0).delete_group("sg-1", timeout=10)
    stub.assert_no_pending_responses()


def test_launch_spec_public_ip_imdsv2_and_encrypted_root_with_region_key():
    builder = _builder.Builder(None, REGION, check_mode=False)
    base = {
        "ImageId": "ami-base",
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
    }
    params = {
        "instance_type": "t3.small",
        "volume_type": "gp3",
        "associate_public_ip_address": True,
        "subnet_id": "subnet-1",
        "region_kms_keys": {REGION: "alias/ami"},
        "iam_instance_profile": "ssm-builder",
    }
    spec = builder.launch_spec(params, {"base": base, "bake_id": "b1"}, "key-b1", "sg-1", "2026-01-01T00:00:00Z")
    assert spec["MetadataOptions"]["HttpTokens"] == "required"
    assert spec["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {
                "Encrypted": True,
                "DeleteOnTermination": True,
                "VolumeType": "gp3",
                "VolumeSize": 8,
                "KmsKeyId": "alias/ami",
            },
        }
    ]
    assert spec["NetworkInterfaces"] == [
        {
            "DeviceIndex": 0,
            "Groups": ["sg-1"],
            "AssociatePublicIpAddress": True,
            "DeleteOnTermination": True,
            "SubnetId": "subnet-1",
        }
    ]
    assert "SecurityGroupIds" not in spec and "SubnetId" not in spec
    assert spec["IamInstanceProfile"] == {"Name": "ssm-builder"}
    kinds = {t["ResourceType"]: {x["Key"]: x["Value"] for x in t["Tags"]} for t in spec["TagSpecifications"]}
    assert (
        kinds["instance"][_common.TAG_BAKE_ID] == "b1"
        and kinds["volume"][_common.TAG_CREATED] == "2026-01-01T00:00:00Z"
    )
