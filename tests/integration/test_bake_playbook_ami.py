"""playbooks/bake.yml, AMI path, end to end against a real moto_server on 127.0.0.1:5059.

moto's instances cannot be reached over SSH, so an SSH server stands in for each builder instance
(tests/integration/ami_standin.py): a container from the base image with openssh-server, published on a loopback
port that the bake reaches through `bake_ami_ssh_host`/`bake_ami_ssh_port`, with the temporary key pair moto returned
authorized for `admin` the way cloud-init would. The provisioning play runs over `ansible.builtin.ssh` with the key
file `bake_ami` wrote, as against AWS. Everything else is the real flow too: base AMI resolution, fingerprint, cache
lookup, builder launch (key pair, security group, SSH banner probe), the roles and the seal, capture with copies
and sharing, cleanup of the instance, key pair, security group, key file and known_hosts file, the artifact record.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from conftest import REPO_ROOT
from conftest import read_valid_record
from conftest import run_playbook
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ami_standin import SSH_USER  # noqa: E402
from ami_standin import StandIn  # noqa: E402
from ami_standin import ensure_image  # noqa: E402
from ami_standin import stand_in  # noqa: E402
from moto_fixtures import FAKE_ENV  # noqa: E402
from moto_fixtures import FAKE_KEYS  # noqa: E402
from moto_fixtures import base_ami_and_subnet  # noqa: E402
from moto_fixtures import ec2_client  # noqa: E402
from moto_fixtures import register_base_ami  # noqa: E402
from moto_fixtures import start_moto  # noqa: E402
from moto_fixtures import stop_moto  # noqa: E402
from test_promotion import Chain  # noqa: E402

pytestmark = pytest.mark.moto

BAKE = REPO_ROOT / "playbooks" / "bake.yml"
PORT = 5059
REGION = "us-east-1"
COPY_REGIONS = ["eu-west-1", "us-west-2"]
ACCOUNT = "111122223333"
TAG = "immutable-infra:"
BUCKET = "ami-evidence"
# No credentials from the host, no metadata-service probing: only what the tests pass.
AWS_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
}


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def tags_of(resource: dict) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def write_role(roles_dir: Path, name: str, tasks: str) -> None:
    (roles_dir / name / "tasks").mkdir(parents=True, exist_ok=True)
    (roles_dir / name / "tasks" / "main.yml").write_text("---\n" + tasks)


@pytest.fixture(scope="module")
def moto():
    process, endpoint = start_moto(PORT)
    yield endpoint
    stop_moto(process)


@pytest.fixture(scope="module")
def aws(moto):
    """A registered base AMI, a VPC and a subnet in the source region."""
    ec2 = ec2_client(moto)
    base, _vpc, subnet = base_ami_and_subnet(ec2, 43)
    s3 = boto3.client("s3", endpoint_url=moto, region_name=REGION, **FAKE_KEYS)
    s3.create_bucket(Bucket=BUCKET)
    return {"endpoint": moto, "ec2": ec2, "base_ami": base, "subnet": subnet, "s3": s3}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("amibake")
    roles = root / "roles"
    write_role(
        roles,
        "probe",
        "- name: Write the probe marker\n"
        "  ansible.builtin.copy:\n"
        "    dest: /etc/probe-marker\n"
        "    content: \"{{ probe_marker | default('unset') }}\\n\"\n"
        '    mode: "0644"\n',
    )
    write_role(
        roles,
        "broken_on_ec2",
        "- name: Fail on the EC2 builder only\n"
        "  ansible.builtin.fail:\n"
        "    msg: only the AMI builder fails\n"
        "  when: bake_kind | default('container') == 'ami'\n",
    )
    write_role(
        roles, "broken", "- name: Fail on purpose\n  ansible.builtin.command: /bin/false\n  changed_when: false\n"
    )
    (root / "keys").mkdir()
    # the signing key of every bake here (docs/supply-chain.md, "AMIs"), outside the bake's key directory
    key = ec.generate_private_key(ec.SECP256R1())
    (root / "signing.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (root / "signing.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    (root / "other.pub").write_bytes(
        other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {"root": root, "roles": roles, "artifacts": root / "artifacts", "keys": root / "keys"}


@pytest.fixture(scope="module")
def standin_image(base_image):
    """The SSH stand-in's image (tests/ami-standin/Dockerfile): built once, reused while its inputs are unchanged."""
    return ensure_image(base_image)


def bake(
    aws,
    work,
    app: str,
    *args: str,
    box: StandIn | None = None,
    boot: bool = True,
    extra: dict | None = None,
    env: dict | None = None,
):
    """Run bake.yml's AMI path; `box` answers for the builder a run launches (None: the run must launch none).

    With boot=False nobody authorizes the bake's key on the box: a builder cloud-init never set up.
    """
    extra_vars = {
        "bake_name": app,
        "bake_kinds": ["ami"],
        "bake_roles": ["probe"],
        "bake_vars": {"probe_marker": "ami-one"},
        "bake_artifacts_dir": str(work["artifacts"]),
        "bake_revision": "abc1234",
        "bake_source": "https://example.invalid/repo.git",
        "bake_ami_aws": {
            "endpoint_url": aws["endpoint"],
            **FAKE_KEYS,
        },
        "bake_ami_region": REGION,
        "bake_ami_base": aws["base_ami"],
        "bake_ami_subnet_id": aws["subnet"],
        "bake_ami_ssh_cidr": "192.0.2.10/32",
        "bake_ami_copy_regions": COPY_REGIONS,
        "bake_ami_share_accounts": [ACCOUNT],
        # sharing needs customer-managed keys in every region (moto keeps no KMS keys: the references are not checked)
        "bake_ami_encrypted": True,
        "bake_ami_region_kms_keys": {r: f"alias/{app}-ami" for r in [REGION, *COPY_REGIONS]},
        "bake_ami_tags": {"app": app},
        "bake_ami_poll_interval": 1,
        "bake_ami_key_dir": str(work["keys"]),
        # the AMI's SBOM (syft on the builder), signature and provenance, in moto's S3
        "bake_ami_evidence_bucket": BUCKET,
        "bake_signing_key_path": str(work["root"] / "signing.pem"),
        # a stand-in answers within seconds; without one, a builder launched by mistake fails in a minute
        "bake_ami_ssh_timeout": 60,
        **(box.bake_vars if box else {}),
    }
    extra_vars.update(extra or {})
    run_env = {**AWS_ENV, "ANSIBLE_ROLES_PATH": str(work["roles"]), **(env or {})}
    if box is None or not boot:
        return run_playbook(BAKE, extra_vars, *args, env=run_env)
    with box.boot(work["keys"]):
        return run_playbook(BAKE, extra_vars, *args, env=run_env)


def said(proc, text: str) -> bool:
    """Whether the run's output holds `text`, whatever line wrapping the callback applied."""
    return " ".join(text.split()) in " ".join(proc.stdout.split())


def signing_key_id(key) -> str:
    """supply/_sign.py's key ID: sha256 of the public key's DER."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def task_status(proc, name: str) -> str | None:
    """The first result line's status (ok, changed, skipping, failed, fatal) of the task whose name starts so."""
    lines = proc.stdout.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(f"TASK [{name}"):
            for following in lines[index + 1 :]:
                status = following.split(":", 1)[0]
                if status in ("ok", "changed", "skipping", "failed", "fatal"):
                    return status
    return None


def latest(work, name: str) -> dict:
    """latest.json, after validating it and its bake's record against docs/artifact-record.schema.json."""
    return read_valid_record(work["artifacts"], name)


def all_instances(ec2) -> list[dict]:
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def live_bake_resources(ec2) -> dict:
    """Every live instance, key pair and security group carrying a bake ID tag (any bake)."""
    tagged = [{"Name": "tag-key", "Values": [f"{TAG}bake-id"]}]
    live = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    return {
        "instances": [i for r in ec2.describe_instances(Filters=tagged + live)["Reservations"] for i in r["Instances"]],
        "key_pairs": ec2.describe_key_pairs(Filters=tagged)["KeyPairs"],
        "security_groups": ec2.describe_security_groups(Filters=tagged)["SecurityGroups"],
    }


NOTHING = {"instances": [], "key_pairs": [], "security_groups": []}


@pytest.fixture(scope="module")
def baked(aws, work, standin_image):
    app = f"amiweb{time.time_ns() % 10**6}"
    before = len(all_instances(aws["ec2"]))
    with stand_in(standin_image) as box:
        # something the seal must remove, to prove the seal ran on the builder
        box.sh("echo 'secret-cmd' > /root/.bash_history")
        # -vvv shows the ssh command lines; a global host_key_checking=False must not weaken the builder's
        proc = bake(aws, work, app, "-vvv", box=box, env={"ANSIBLE_HOST_KEY_CHECKING": "False"})
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
        record = latest(work, f"{app}-ami")
        objects = evidence_objects(aws, record)
        yield {"app": app, "proc": proc, "record": record, "instances_before": before, "box": box, "objects": objects}


def evidence_objects(aws, record) -> dict:
    """{name: (bytes, LastModified)} of the AMI's evidence objects in S3."""
    prefix = f"immutable-infra/{record['id'][REGION]}/"
    found = {}
    for name in ("sbom.cdx.json", "signature.json", "provenance.dsse.json"):
        got = aws["s3"].get_object(Bucket=BUCKET, Key=prefix + name)
        found[name] = (got["Body"].read(), got["LastModified"])
    return found


def test_ami_bake_copies_tags_shares_and_records_every_region(aws, baked):
    record = baked["record"]
    assert record["kind"] == "ami" and record["name"] == f"{baked['app']}-ami" and record["artifact"] == baked["app"]
    assert record["cached"] is False
    assert set(record["id"]) == {REGION, *COPY_REGIONS}
    assert record["image_id"] == record["id"][REGION]
    assert record["base"]["id"] == aws["base_ami"]
    assert [r["name"] for r in record["roles"]] == ["probe", "immutable.infra.seal"]
    assert record["revision"] == "abc1234"
    # exactly one builder instance was launched for the bake
    assert len(all_instances(aws["ec2"])) == baked["instances_before"] + 1
    for region, ami in record["id"].items():
        ec2 = ec2_client(aws["endpoint"], region)
        image = ec2.describe_images(ImageIds=[ami])["Images"][0]
        tags = tags_of(image)
        assert tags[f"{TAG}fingerprint"] == record["fingerprint"], region
        assert tags[f"{TAG}bake-id"] == record["bake_id"]
        assert tags[f"{TAG}base-ami"] == aws["base_ami"]
        assert tags[f"{TAG}revision"] == "abc1234" and tags["app"] == baked["app"]
        perms = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")["LaunchPermissions"]
        assert {"UserId": ACCOUNT} in perms, region
    assert "PRIVATE KEY" not in baked["proc"].stdout + baked["proc"].stderr


def test_the_roles_and_the_seal_ran_on_the_builder(baked):
    box = baked["box"]
    # /etc is root's: the role ran with become (sudo) as on a real builder
    assert box.sh("stat -c '%U %a' /etc/probe-marker && cat /etc/probe-marker").stdout == "root 644\nami-one\n"
    # the seal removed the planted shell history, the authorized key and the host keys, and emptied the machine
    # identity; hygiene passed after it (over the SSH master connection opened before the seal)
    assert box.sh("test -e /root/.bash_history", check=False).returncode != 0
    assert box.sh(f"test -e /home/{SSH_USER}/.ssh/authorized_keys", check=False).returncode != 0
    assert box.host_keys() == set()
    assert box.sh("cat /etc/machine-id").stdout == ""


def fingerprint(public_key: str) -> str:
    return subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"], input=public_key, capture_output=True, text=True, check=True
    ).stdout.split()[1]


def test_the_roles_ran_over_ssh_with_the_temporary_key_and_a_per_bake_known_hosts(baked, tmp_path):
    box = baked["box"]
    # the key moto returned for the bake (bake_ami's key file) was authorized, and sshd let admin in with it
    (public_key,) = box.authorized
    assert f"Accepted publickey for {SSH_USER} from" in box.sshd_log()
    logins = [line for line in box.sshd_log().splitlines() if line.startswith("Accepted publickey")]
    assert logins and all(line.endswith(fingerprint(public_key)) for line in logins), logins
    # the builder's host key was accepted on first contact into the bake's own known_hosts file, for the
    # address:port the play used ...
    assert box.host_keys_at_boot and box.known_hosts
    assert {" ".join(line.split()[1:3]) for line in box.known_hosts} <= box.host_keys_at_boot
    bake_known_hosts = tmp_path / "known_hosts"
    bake_known_hosts.write_text("\n".join(box.known_hosts) + "\n")
    entry = f"[127.0.0.1]:{box.port}"
    found = subprocess.run(["ssh-keygen", "-F", entry, "-f", str(bake_known_hosts)], capture_output=True, check=False)
    assert found.returncode == 0
    # ... also under a global host_key_checking=False (the run's environment), which the builder's host vars override
    ssh_commands = [line for line in baked["proc"].stdout.splitlines() if "SSH: EXEC ssh " in line]
    assert ssh_commands and all("StrictHostKeyChecking=accept-new" in line for line in ssh_commands)
    assert not any("StrictHostKeyChecking=no" in line for line in ssh_commands)
    # ... and nothing went into the user's known_hosts
    users = Path.home() / ".ssh" / "known_hosts"
    assert (
        not users.exists()
        or subprocess.run(["ssh-keygen", "-F", entry, "-f", str(users)], capture_output=True, check=False).returncode
        != 0
    )
    assert "PRIVATE KEY" not in baked["proc"].stdout + baked["proc"].stderr


def test_cleanup_leaves_no_instance_key_pair_security_group_or_key_file(aws, work, baked):
    assert live_bake_resources(aws["ec2"]) == NOTHING
    assert list(work["keys"].iterdir()) == []


def test_cache_hit_launches_nothing(aws, work, baked):
    before = all_instances(aws["ec2"])
    keys_before = aws["ec2"].describe_key_pairs()["KeyPairs"]
    # skipped tasks shown (ansible.cfg hides them) so that the skip of the evidence step can be asserted
    proc = bake(aws, work, baked["app"], env={"ANSIBLE_DISPLAY_SKIPPED_HOSTS": "True"})
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    record = latest(work, f"{baked['app']}-ami")
    assert record["cached"] is True
    assert record["id"] == baked["record"]["id"] and record["fingerprint"] == baked["record"]["fingerprint"]
    assert record["bake_id"] != baked["record"]["bake_id"]
    assert all_instances(aws["ec2"]) == before
    assert aws["ec2"].describe_key_pairs()["KeyPairs"] == keys_before
    assert said(proc, "cached (nothing launched)")
    # the same SBOM, signature and provenance: reused from S3 (no builder, so no syft), not one object rewritten
    assert record["sbom"] == baked["record"]["sbom"] and record["signature"] == baked["record"]["signature"]
    assert evidence_objects(aws, record) == baked["objects"]
    assert said(proc, f"sbom: {record['sbom']['reference']}")
    # the AMI's tags name this signing key: the evidence step did not run at all (nor the raw SBOM's removal)
    assert task_status(proc, "Store the evidence") == "skipping"
    assert task_status(proc, "Remove the builder's raw SBOM") == "skipping"
    assert said(proc, "evidence kept: the AMI's tags name this signing key")


def test_a_failing_role_removes_the_builder_and_records_nothing(aws, work, baked, standin_image):
    record_before = latest(work, f"{baked['app']}-ami")
    before = len(all_instances(aws["ec2"]))
    with stand_in(standin_image) as box:
        proc = bake(aws, work, baked["app"], box=box, extra={"bake_roles": ["probe", "broken"]})
        assert box.sh("cat /etc/probe-marker").stdout == "ami-one\n"  # the first role ran, over SSH
    assert proc.returncode != 0
    assert said(proc, "failed in task 'Fail on purpose'")
    # a builder was launched (a new fingerprint), and everything of it is gone again
    assert len(all_instances(aws["ec2"])) == before + 1
    assert live_bake_resources(aws["ec2"]) == NOTHING
    assert list(work["keys"].iterdir()) == []
    assert latest(work, f"{baked['app']}-ami") == record_before


def test_check_mode_launches_and_writes_nothing(aws, work, baked):
    ec2 = aws["ec2"]
    before = {
        "instances": all_instances(ec2),
        "images": ec2.describe_images(Owners=["self"])["Images"],
        "key_pairs": ec2.describe_key_pairs()["KeyPairs"],
        "security_groups": ec2.describe_security_groups()["SecurityGroups"],
    }
    records_before = sorted((work["artifacts"] / f"{baked['app']}-ami" / "records").iterdir())
    proc = bake(aws, work, baked["app"], "--check", extra={"bake_vars": {"probe_marker": "check"}})
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert said(proc, "would launch a t3.micro builder from " + aws["base_ami"])
    after = {
        "instances": all_instances(ec2),
        "images": ec2.describe_images(Owners=["self"])["Images"],
        "key_pairs": ec2.describe_key_pairs()["KeyPairs"],
        "security_groups": ec2.describe_security_groups()["SecurityGroups"],
    }
    assert after == before
    assert sorted((work["artifacts"] / f"{baked['app']}-ami" / "records").iterdir()) == records_before
    assert list(work["keys"].iterdir()) == []


@pytest.fixture
def two_kind_app(registry):
    app = f"amiboth{time.time_ns() % 10**6}"
    yield app
    images = docker("images", "-q", f"immutable-infra-cache/{app}", check=False).stdout.split()
    if images:
        docker("rmi", "-f", *images, check=False)


def test_one_bake_produces_both_records_with_the_same_roles(aws, work, standin_image, registry, two_kind_app):
    app = two_kind_app
    with stand_in(standin_image) as box:
        proc = bake(
            aws,
            work,
            app,
            box=box,
            extra={"bake_kinds": ["container", "ami"], "bake_registry": registry["address"]},
            env={"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]},
        )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    container = latest(work, app)
    ami = latest(work, f"{app}-ami")
    assert container["kind"] == "container" and container["id"].startswith(f"{registry['address']}/{app}@sha256:")
    assert ami["kind"] == "ami" and set(ami["id"]) == {REGION, *COPY_REGIONS}
    assert container["bake_id"] == ami["bake_id"]
    assert container["roles"] == ami["roles"] and [r["name"] for r in ami["roles"]] == ["probe", "immutable.infra.seal"]
    # different bases make different artifact fingerprints
    assert container["fingerprint"] != ami["fingerprint"]
    # both builders are gone
    assert live_bake_resources(aws["ec2"]) == NOTHING
    builders = docker("ps", "-a", "-q", "--filter", f"label=io.immutable-infra.app={app}").stdout.split()
    assert builders == []


def test_base_filter_resolves_to_the_newest_match_before_anything_launches(aws, work, baked):
    ec2 = aws["ec2"]
    time.sleep(1.1)  # moto's creation dates have one-second resolution
    newer = register_base_ami(ec2)
    try:
        before = all_instances(ec2)
        # (no architecture in the filter: moto does not match registered images by architecture)
        extra = {"bake_ami_base_filter": {"name": "debian-12-base-*"}}
        proc = bake(aws, work, baked["app"], "--check", extra={**extra, "bake_ami_base": ""})
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
        assert said(proc, f"would launch a t3.micro builder from {newer}")
        assert all_instances(ec2) == before
        proc = bake(aws, work, baked["app"], "--check", extra={**extra, "bake_ami_base": aws["base_ami"]})
        assert proc.returncode != 0 and said(proc, "set exactly one of bake_ami_base")
        proc = bake(
            aws,
            work,
            baked["app"],
            "--check",
            extra={"bake_ami_base_filter": {"name": "no-such-image-*"}, "bake_ami_base": ""},
        )
        assert proc.returncode != 0 and said(proc, "matched no available image in us-east-1")
    finally:
        ec2.deregister_image(ImageId=newer)


def test_one_failing_builder_of_two_kinds_removes_both_and_records_nothing(
    aws, work, standin_image, registry, two_kind_app
):
    app = two_kind_app
    before = len(all_instances(aws["ec2"]))
    with stand_in(standin_image) as box:
        proc = bake(
            aws,
            work,
            app,
            box=box,
            extra={
                "bake_kinds": ["container", "ami"],
                "bake_registry": registry["address"],
                "bake_roles": ["probe", "broken_on_ec2"],
            },
            env={"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]},
        )
    assert proc.returncode != 0
    assert said(proc, "only the AMI builder fails")
    assert said(proc, "every builder of the bake is removed and nothing is captured")
    assert len(all_instances(aws["ec2"])) == before + 1
    assert live_bake_resources(aws["ec2"]) == NOTHING
    assert docker("ps", "-a", "-q", "--filter", f"label=io.immutable-infra.app={app}").stdout.split() == []
    assert not (work["artifacts"] / app).exists() and not (work["artifacts"] / f"{app}-ami").exists()


def test_a_bad_ssh_port_or_host_fails_before_anything_launches(aws, work, baked):
    before = all_instances(aws["ec2"])
    # (an option smuggled in through the host name would reach the ssh command line)
    for bad in ({"bake_ami_ssh_port": 70000}, {"bake_ami_ssh_host": "127.0.0.1 -oProxyCommand=x"}):
        proc = bake(aws, work, baked["app"], extra={**bad, "bake_vars": {"probe_marker": "bad-ssh"}})
        assert proc.returncode != 0, bad
        assert said(proc, "bake_ami_ssh_host must be a host name or address and bake_ami_ssh_port a port number"), bad
    assert all_instances(aws["ec2"]) == before
    assert list(work["keys"].iterdir()) == []


def test_a_builder_that_never_accepts_the_key_fails_the_bake_and_removes_everything(aws, work, baked, standin_image):
    record_before = latest(work, f"{baked['app']}-ami")
    before = len(all_instances(aws["ec2"]))
    with stand_in(standin_image) as box:
        # sshd answers (the banner probe passes) but the key is never authorized: every login is refused
        extra = {"bake_vars": {"probe_marker": "never"}, "bake_ami_ssh_timeout": 8}
        proc = bake(aws, work, baked["app"], box=box, boot=False, extra=extra)
        assert "Accepted publickey" not in box.sshd_log()
        assert box.sh("test -e /etc/probe-marker", check=False).returncode != 0
    assert proc.returncode != 0
    assert said(proc, "failed in task 'Wait until the EC2 builder answers over its connection'")
    assert len(all_instances(aws["ec2"])) == before + 1
    assert live_bake_resources(aws["ec2"]) == NOTHING
    assert list(work["keys"].iterdir()) == []  # the key file and the known_hosts file
    assert latest(work, f"{baked['app']}-ami") == record_before
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr


# -- the AMI's SBOM, signature and provenance (docs/supply-chain.md, "AMIs") -------------------------------------


def test_the_ami_carries_its_sbom_signature_and_provenance_in_s3_named_by_its_tags(aws, work, baked):
    record, objects = baked["record"], baked["objects"]
    source = record["id"][REGION]
    location = f"s3://{BUCKET}/immutable-infra/{source}/"
    assert record["sbom"]["reference"] == location + "sbom.cdx.json"
    assert record["signature"]["signed"] is True and record["signature"]["signature"] == location + "signature.json"
    sbom = objects["sbom.cdx.json"][0]
    assert record["sbom"]["sha256"] == "sha256:" + hashlib.sha256(sbom).hexdigest()
    # syft read the builder's filesystem: Debian packages with purls, the stand-in's sshd among them
    document = json.loads(sbom)
    assert document["metadata"]["component"]["version"] == source
    purls = [c.get("purl", "") for c in document["components"]]
    assert any(p.startswith("pkg:deb/debian/openssh-server@") for p in purls), purls[:10]
    assert record["sbom"]["packages"] == len(document["components"]) > 50
    # the local copy is the same bytes
    assert (work["artifacts"] / f"{baked['app']}-ami" / record["sbom"]["path"]).read_bytes() == sbom
    # the source AMI and every copy name the objects and their sha256
    for region, ami in record["id"].items():
        tags = tags_of(ec2_client(aws["endpoint"], region).describe_images(ImageIds=[ami])["Images"][0])
        assert tags[f"{TAG}evidence"] == location, region
        for name, tag in (
            ("sbom.cdx.json", "sbom"),
            ("signature.json", "signature"),
            ("provenance.dsse.json", "provenance"),
        ):
            assert tags[f"{TAG}{tag}-sha256"] == hashlib.sha256(objects[name][0]).hexdigest(), (region, name)
    # the signed payload binds every AMI with its region and the SBOM
    signed = json.loads(objects["signature.json"][0])
    payload = json.loads(base64.b64decode(signed["payload"]))
    assert payload["critical"]["image"]["amis"] == record["id"]
    assert payload["critical"]["sbom"]["sha256"] == hashlib.sha256(sbom).hexdigest()
    # syft left nothing on the builder, and its raw output nothing on the controller
    assert baked["box"].sh("ls /tmp /var/tmp").stdout.count("immutable-infra-sbom-") == 0
    assert list(work["keys"].iterdir()) == []


def test_the_gate_passes_the_signed_ami_and_refuses_it_unsigned_wrongly_signed_or_tampered(aws, work, baked, tmp_path):
    record = baked["record"]
    chain = Chain(tmp_path, f"{baked['app']}-ami", [record], backend="none", env=AWS_ENV)
    group_vars = chain.inventory / "group_vars" / "all"
    trusted = {"required": True, "public_keys": [str(work["root"] / "signing.pub")]}
    (group_vars / "aws.yml").write_text(
        json.dumps(
            {
                "promotion_aws": {"region": REGION, "endpoint_url": aws["endpoint"], **FAKE_KEYS},
                "promotion_signature": trusted,
            }
        )
    )
    res = chain.run("deploy.yml", env="dev")
    assert res.returncode == 0, res.stdout[-5000:]
    assert "signature: valid (sha256:" in res.stdout and "provenance: valid" in res.stdout, res.stdout[-3000:]
    ledger = chain.ledger_path.read_bytes()

    def refused(text: str, **extra) -> None:
        res = chain.run("promote.yml", **{"from": "dev", "to": "staging"}, **extra)
        assert res.returncode != 0, res.stdout[-3000:]
        assert said(res, text), res.stdout[-3000:]
        assert said(res, "Nothing was pulled, switched, tagged or recorded")
        assert chain.ledger_path.read_bytes() == ledger

    # signed by a key the policy does not trust
    other = {"required": True, "public_keys": [str(work["root"] / "other.pub")]}
    refused("is not signed by a trusted key", promotion_signature=other)
    # the SBOM object replaced by another (its sha256 is no longer the one the AMIs' tags name)
    source = record["id"][REGION]
    key = f"immutable-infra/{source}/sbom.cdx.json"
    kept = aws["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=kept.replace(b"openssh-server", b"openssh-zerver"))
    try:
        refused("it was replaced")
    finally:
        aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=kept)
    # unsigned: the evidence tags removed from every AMI (a bake without bake_ami_evidence_bucket)
    removed = {}
    for region, ami in record["id"].items():
        ec2 = ec2_client(aws["endpoint"], region)
        tags = tags_of(ec2.describe_images(ImageIds=[ami])["Images"][0])
        removed[region] = [{"Key": k, "Value": v} for k, v in tags.items() if k.startswith(f"{TAG}evidence")]
        ec2.delete_tags(Resources=[ami], Tags=[{"Key": t["Key"]} for t in removed[region]])
    try:
        refused("signature check failed: no signature")
    finally:
        for region, ami in record["id"].items():
            ec2_client(aws["endpoint"], region).create_tags(Resources=[ami], Tags=removed[region])


def test_verify_artifact_checks_an_ami_by_hand(aws, work, baked):
    record = baked["record"]
    args = {
        "artifact": record["id"],
        "verify_name": f"{baked['app']}-ami",
        "bake_artifacts_dir": str(work["artifacts"]),
        "verify_aws_endpoint_url": aws["endpoint"],
        "verify_aws_region": REGION,
    }
    env = {**AWS_ENV, **FAKE_ENV}
    playbook = REPO_ROOT / "playbooks" / "verify_artifact.yml"
    res = run_playbook(playbook, {**args, "verify_public_keys": str(work["root"] / "signing.pub")}, env=env)
    assert res.returncode == 0, res.stdout[-3000:]
    assert said(res, "provenance signed by sha256:") and said(res, "materials match"), res.stdout[-3000:]
    res = run_playbook(playbook, {**args, "verify_public_keys": str(work["root"] / "other.pub")}, env=env)
    assert res.returncode != 0 and said(res, "is not signed by a trusted key"), res.stdout[-3000:]


def test_a_cached_rebake_with_another_signing_key_runs_the_evidence_step_and_re_signs(aws, work, baked, tmp_path):
    record = baked["record"]
    assert baked["objects"]["signature.json"]  # the shared bake's evidence, restored below
    images = {region: ec2_client(aws["endpoint"], region) for region in record["id"]}
    tags_before = {
        region: tags_of(ec2.describe_images(ImageIds=[record["id"][region]])["Images"][0])
        for region, ec2 in images.items()
    }
    assert {tags[f"{TAG}signing-key"] for tags in tags_before.values()} == {record["signature"]["key_id"]}
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other.pem").write_bytes(
        other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    try:
        proc = bake(aws, work, baked["app"], extra={"bake_signing_key_path": str(tmp_path / "other.pem")})
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
        rebaked = latest(work, f"{baked['app']}-ami")
        assert rebaked["cached"] is True and rebaked["id"] == record["id"]
        assert task_status(proc, "Store the evidence") == "changed"
        assert not said(proc, "evidence kept")
        # signed again with the new key; the SBOM is the same object
        assert rebaked["signature"]["key_id"] == signing_key_id(other) != record["signature"]["key_id"]
        assert rebaked["sbom"] == record["sbom"]
        objects = evidence_objects(aws, rebaked)
        assert objects["sbom.cdx.json"][0] == baked["objects"]["sbom.cdx.json"][0]
        assert objects["signature.json"][0] != baked["objects"]["signature.json"][0]
        for region, ec2 in images.items():
            tags = tags_of(ec2.describe_images(ImageIds=[record["id"][region]])["Images"][0])
            assert tags[f"{TAG}signing-key"] == signing_key_id(other), region
    finally:
        for name, (data, _modified) in baked["objects"].items():
            aws["s3"].put_object(Bucket=BUCKET, Key=f"immutable-infra/{record['id'][REGION]}/{name}", Body=data)
        for region, ec2 in images.items():
            kept = [{"Key": k, "Value": v} for k, v in tags_before[region].items() if k.startswith(TAG)]
            ec2.create_tags(Resources=[record["id"][region]], Tags=kept)


def sbom_packages(sbom: bytes) -> dict:
    """{(name, version, purl): {the cataloger that found it, the package's source package}} of a CycloneDX document."""
    found = {}
    for component in json.loads(sbom)["components"]:
        props = {p["name"]: p["value"] for p in component.get("properties") or []}
        found[(component.get("name"), component.get("version"), component.get("purl") or "")] = {
            "by": props.get("syft:package:foundBy", ""),
            "source": props.get("syft:metadata:source") or component.get("name"),
        }
    return found


def test_the_package_tree_and_the_full_scan_on_the_builder_list_the_same_packages(aws, work, baked, standin_image):
    """The default SBOM (the builder's package tree, read by syft on the controller) against the full scan of the
    builder's filesystem (syft copied there), which is also the automatic fallback: here the builder has no tar."""
    app = f"amifull{time.time_ns() % 10**6}"
    with stand_in(standin_image) as box:
        box.sh("mv /usr/bin/tar /usr/bin/tar.hidden")
        proc = bake(aws, work, app, box=box)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
        assert said(proc, "the package tree could not be taken") and said(proc, "tar is not in the image")
        assert box.sh("ls /tmp /var/tmp").stdout.count("immutable-infra-sbom-") == 0
    full = evidence_objects(aws, latest(work, f"{app}-ami"))["sbom.cdx.json"][0]
    tree = baked["objects"]["sbom.cdx.json"][0]
    properties = {p["name"]: p["value"] for p in json.loads(tree)["metadata"].get("properties") or []}
    assert properties["immutable-infra:sbom:source"] == "package-tree"
    assert "immutable-infra:sbom:source" not in json.dumps(json.loads(full)["metadata"])
    from_tree, from_full = sbom_packages(tree), sbom_packages(full)
    assert len(from_tree) > 50
    assert any(purl.startswith("pkg:deb/debian/openssh-server@") for _n, _v, purl in from_tree)
    # the same packages, names, versions and purls; the full scan also reads the package notes inside ELF binaries
    # (libsystemd0's say "systemd"), which name the source package of packages the tree lists from dpkg's database
    assert set(from_tree) - set(from_full) == set()
    extra = {key: found for key, found in from_full.items() if key not in from_tree}
    assert all(found["by"].endswith("binary-package-cataloger") for found in extra.values()), extra
    sources = {(found["source"], version) for (_name, version, _purl), found in from_tree.items()}
    assert {(name, version) for name, version, _purl in extra} <= sources, extra


def test_diff_yml_and_artifact_sbom_read_the_sboms_of_amis(aws, work, baked, standin_image):
    """playbooks/diff.yml between the shared bake's AMIs and a second bake whose role installs one more package
    (built with dpkg-deb on the builder): the SBOMs come from the S3 objects the AMIs' tags name; an AMI against a
    container is refused by name; artifact_sbom fetches an AMI's SBOM the same way."""
    from test_supply_chain_sbom import PACKAGE_TASK

    write_role(work["roles"], "amipkg", PACKAGE_TASK.format(name="probe-ami", version="1.0-1"))
    app = f"amidiff{time.time_ns() % 10**6}"
    with stand_in(standin_image) as box:
        proc = bake(aws, work, app, box=box, extra={"bake_roles": ["probe", "amipkg"]})
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    new = latest(work, f"{app}-ami")
    env = {**AWS_ENV, **FAKE_ENV}
    sides = {"from": json.dumps(baked["record"]["id"]), "to": json.dumps(new["id"])}
    settings = {"promotion_aws": {"region": REGION, "endpoint_url": aws["endpoint"]}}
    diff = REPO_ROOT / "playbooks" / "diff.yml"
    res = run_playbook(diff, {**sides, **settings}, env=env)
    assert res.returncode == 0, res.stdout[-3000:]
    assert said(res, "packages: 1 added, 0 removed, 0 upgraded, 0 downgraded"), res.stdout[-3000:]
    assert said(res, "+ probe-ami 1.0-1")
    # one AMI ID alone (its region from promotion_aws.region) gives the same diff
    alone = {"from": baked["record"]["id"][REGION], "to": new["id"][REGION]}
    res = run_playbook(diff, {**alone, **settings}, env=env)
    assert res.returncode == 0 and said(res, "+ probe-ami 1.0-1"), res.stdout[-3000:]
    container = "127.0.0.1:5000/web@sha256:" + "0" * 64
    res = run_playbook(diff, {"from": sides["from"], "to": container, **settings}, env=env)
    assert res.returncode != 0 and said(res, "are not of one kind (a container and an AMI)"), res.stdout[-3000:]
    # artifact_sbom reads the same S3 object, byte for byte, and names where it came from
    out = work["root"] / f"{app}.cdx.json"
    fetch = REPO_ROOT / "tests" / "integration" / "playbooks" / "sbom_fetch.yml"
    res = run_playbook(fetch, {"image": sides["to"], "dest": str(out), "sbom_endpoint_url": aws["endpoint"]}, env=env)
    assert res.returncode == 0, res.stdout[-3000:]
    assert out.read_bytes() == evidence_objects(aws, new)["sbom.cdx.json"][0]
    assert said(res, f"s3://{BUCKET}/immutable-infra/{new['id'][REGION]}/sbom.cdx.json")
