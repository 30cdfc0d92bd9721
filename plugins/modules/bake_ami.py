#!/usr/bin/python

# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: bake_ami
short_description: The AMI life cycle around provisioning - cache lookup, builder, capture, cleanup, retention
version_added: 0.1.0
description:
  - Runs one step of an immutable AMI bake; the provisioning itself is an ordinary play against the builder.
  - O(state=cached) looks up an image owned by the account tagged C(immutable-infra:fingerprint=<fingerprint>)
    with one C(DescribeImages) call and returns its ID per region; it never launches anything.
  - O(state=builder) launches a builder instance from a base AMI with a temporary key pair and a temporary
    security group that allows port 22 only from O(ssh_cidr), IMDSv2 required and encrypted EBS volumes. Every
    temporary resource is tagged with the bake ID and its creation time.
  - "O(state=captured) stops the builder, creates the image, waits until it is available, tags the image and its
    snapshots with the fingerprint and provenance, copies it to O(copy_regions) in parallel (optionally encrypted
    with a KMS key per region), tags the copies, shares every copy, and returns C({region: ami_id})."
  - O(state=absent) terminates the builder and deletes the key pair and security group of O(bake_id); without
    O(bake_id) it sweeps orphans of killed runs (tagged resources older than O(orphan_min_age)).
  - O(state=retained) keeps the newest O(keep) images of a family and deregisters older ones with their
    snapshots, except images in O(protected_ids) (the ledger's live and previous IDs, which
    C(playbooks/gc_ami.yml) passes) and images in use in the region by an instance that is not terminated, a
    launch configuration or any launch template version.
  - "Tags written: C(immutable-infra:fingerprint), C(immutable-infra:bake-id), C(immutable-infra:created),
    C(immutable-infra:role), C(immutable-infra:family), C(immutable-infra:revision), C(immutable-infra:base-ami),
    C(immutable-infra:source-ami), C(immutable-infra:source-region) and C(immutable-infra:copies)."
author:
  - immutable.infra contributors (@immutable-infra)
options:
  state:
    description: The step to run.
    type: str
    required: true
    choices: [cached, builder, captured, absent, retained]
  fingerprint:
    description:
      - The bake's content hash (for example C(sha256:...)), stored in the C(immutable-infra:fingerprint) tag.
      - Required for O(state=cached) and O(state=captured).
    type: str
  bake_id:
    description:
      - ID of one bake run, tagged on every temporary resource (1-63 letters, digits, dashes).
      - O(state=builder) generates one when omitted and returns it; pass it to the later states.
      - With O(state=absent), omitting it sweeps orphans of killed runs instead.
    type: str
  copy_regions:
    description:
      - Regions to copy the image to (the module's own region is always included in the result).
      - With O(state=cached), the lookup is a hit only when a copy exists in each of them.
    type: list
    elements: str
    default: []
  base_ami:
    description: ID of the base AMI for the builder. Mutually exclusive with O(base_ami_filter).
    type: str
  base_ami_filter:
    description: Find the base AMI by name; the most recent available match wins.
    type: dict
    suboptions:
      name:
        description: Image name pattern (C(*) wildcards allowed).
        type: str
        required: true
      owners:
        description: Owner account IDs or aliases (C(self), C(amazon)).
        type: list
        elements: str
        default: [self]
      architecture:
        description: Restrict to one architecture (C(x86_64), C(arm64)).
        type: str
  instance_type:
    description: Instance type of the builder.
    type: str
    default: t3.micro
  subnet_id:
    description: Subnet for the builder. Without it the default VPC of the region is used.
    type: str
  vpc_id:
    description: VPC of the temporary security group. Derived from O(subnet_id) when omitted.
    type: str
  associate_public_ip_address:
    description: Give the builder a public IP. Default is the subnet's setting.
    type: bool
  ssh_cidr:
    description:
      - Address range allowed to reach port 22 of the builder.
      - Default is the controller's public address as seen from the internet (from O(ip_check_url)), as C(/32).
        Set it explicitly when the controller reaches the builder over a private network or a VPN.
    type: str
  ip_check_url:
    description: URL answering with the caller's public IPv4 address, used when O(ssh_cidr) is not set.
    type: str
    default: https://checkip.amazonaws.com
  private_key_path:
    description:
      - File the temporary private key is written to (mode 0600). The key is never returned.
      - Required for O(state=builder); with O(state=absent) and O(bake_id) the file is deleted.
    type: path
  key_type:
    description: Type of the temporary key pair.
    type: str
    default: ed25519
    choices: [ed25519, rsa]
  volume_size:
    description: Root volume size in GiB. Default is the base AMI's size.
    type: int
  volume_type:
    description: Root volume type.
    type: str
    default: gp3
  iam_instance_profile:
    description: Instance profile (name or ARN) of the builder, for example to connect with SSM instead of SSH.
    type: str
  wait_for_ssh:
    description: Wait until the builder answers with an SSH banner before returning.
    type: bool
    default: true
  ssh_timeout:
    description: Seconds to wait for SSH. On timeout the builder and its temporary resources are removed.
    type: int
    default: 300
  ssh_port:
    description: Port probed by O(wait_for_ssh).
    type: int
    default: 22
  ssh_host:
    description: Address probed instead of the builder's own address (a tunnel or port forward).
    type: str
  ssh_interface:
    description: Which builder address is returned as RV(builder.address) and probed.
    type: str
    default: public_ip
    choices: [public_ip, private_ip]
  instance_id:
    description: Builder to capture. Default is the builder tagged with O(bake_id).
    type: str
  name:
    description:
      - Name of the image (O(state=captured)). AWS rules apply - 3 to 128 characters of letters, digits and
        C(( ) [ ] . / - ' @ _) and space.
    type: str
  description:
    description: Image description.
    type: str
  revision:
    description: Source revision (for example a git SHA) recorded in the C(immutable-infra:revision) tag.
    type: str
  family:
    description:
      - Image family, recorded in the C(immutable-infra:family) tag by O(state=captured) and selected by
        O(state=retained).
    type: str
  tags:
    description: Extra tags for the image, its snapshots and its copies.
    type: dict
  encrypted:
    description:
      - Encrypt the copies. Each region in O(copy_regions) then needs a key in O(region_kms_keys); this is checked
        before anything starts.
    type: bool
    default: false
  region_kms_keys:
    description:
      - "KMS key (ID, ARN or alias) per region, C({region: key}). The key of the module's region encrypts the
        builder's volumes (and so the image); the others encrypt the copies."
    type: dict
  share_accounts:
    description:
      - 12-digit account IDs given launch permission on every image and create-volume permission on its snapshots.
      - Sharing (this, O(share_organizations) or O(share_ous)) needs a customer-managed KMS key for the module's
        region and every region in O(copy_regions) in O(region_kms_keys), not C(alias/aws/ebs), and O(encrypted=true)
        for copies; an image under the default C(aws/ebs) key cannot be launched in another account. With
        O(state=cached) or O(state=captured) this is checked before any AWS call.
    type: list
    elements: str
    default: []
  share_organizations:
    description: Organization ARNs given launch permission.
    type: list
    elements: str
    default: []
  share_ous:
    description: Organizational unit ARNs given launch permission.
    type: list
    elements: str
    default: []
  orphan_min_age:
    description: With O(state=absent) and no O(bake_id), only bakes whose resources are older than this many
      seconds are removed, so running bakes are left alone.
    type: int
    default: 3600
  name_prefix:
    description: With O(state=retained), select the family by image name prefix (instead of, or with, O(family)).
    type: str
  keep:
    description: With O(state=retained), how many of the newest images to keep.
    type: int
    default: 3
  protected_ids:
    description: With O(state=retained), image IDs never deregistered (for example the ledger's live and previous).
    type: list
    elements: str
    default: []
  wait_timeout:
    description: Seconds to wait for instances and images to change state. Waiter attempts derive from it.
    type: int
    default: 1800
  poll_interval:
    description: Seconds between two polls of a waiter.
    type: int
    default: 15
attributes:
  check_mode:
    support: full
    description: Reports the actions it would take and changes nothing.
  diff_mode:
    support: none
    description: Not supported; RV(actions) lists the changes.
notes:
  - A cache hit needs only the module's region - the source image records its copies in C(immutable-infra:copies).
  - Sharing is additive; launch permissions that are already there are kept.
  - A copy that fails in one region does not undo the others - they stay tagged with the fingerprint, so the next
    run of the same task copies only the missing regions. The task fails and names the failed regions.
  - See docs/bake_ami.md for the IAM policy, builder networking and SSH versus SSM.
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
---
- name: Look for an image with this fingerprint
  immutable.infra.bake_ami:
    state: cached
    fingerprint: "{{ bake_fingerprint }}"
    copy_regions: [eu-central-1]
  register: cache

- name: Launch a builder
  immutable.infra.bake_ami:
    state: builder
    base_ami_filter:
      name: debian-12-amd64-*
      owners: ["136693071363"]
    subnet_id: subnet-0123456789abcdef0
    associate_public_ip_address: true
    private_key_path: "{{ playbook_dir }}/.bake-key"
  register: bake
  when: not cache.hit

- name: Capture, copy to two regions encrypted, share with one account
  immutable.infra.bake_ami:
    state: captured
    bake_id: "{{ bake.bake_id }}"
    fingerprint: "{{ bake_fingerprint }}"
    name: "web-{{ version }}-{{ bake.bake_id }}"
    family: web
    revision: "{{ git_sha }}"
    copy_regions: [eu-central-1, us-east-1]
    encrypted: true
    region_kms_keys:
      eu-west-1: alias/ami
      eu-central-1: alias/ami
      us-east-1: alias/ami
    share_accounts: ["111122223333"]
  register: image

- name: Remove the builder, key pair and security group
  immutable.infra.bake_ami:
    state: absent
    bake_id: "{{ bake.bake_id }}"
    private_key_path: "{{ playbook_dir }}/.bake-key"

- name: Sweep leftovers of killed bakes older than two hours
  immutable.infra.bake_ami:
    state: absent
    orphan_min_age: 7200

- name: Keep five images of the family, never the live or previous ones
  immutable.infra.bake_ami:
    state: retained
    family: web
    keep: 5
    protected_ids: "{{ [ledger.prod.live, ledger.prod.previous] | select | list }}"
"""

RETURN = r"""
amis:
  description: Image ID per region (the module's region and every copy). Empty on a cache miss.
  returned: state=cached or state=captured
  type: dict
  sample: {"eu-west-1": "ami-0123456789abcdef0", "eu-central-1": "ami-0fedcba9876543210"}
hit:
  description: Whether an image with the fingerprint exists in the module's region and in every O(copy_regions).
  returned: state=cached
  type: bool
missing_regions:
  description: Regions where no image with the fingerprint was found.
  returned: state=cached
  type: list
  elements: str
image_id:
  description: ID of the image in the module's region.
  returned: state=cached or state=captured
  type: str
tags:
  description: Tags of the cached image.
  returned: state=cached
  type: dict
name:
  description: Name of the captured image.
  returned: state=captured
  type: str
bake_id:
  description: ID of the bake (generated by O(state=builder) when not given).
  returned: state=builder or state=absent
  type: str
ssh_cidr:
  description: Address range allowed to reach port 22 of a new builder.
  returned: state=builder and a builder was launched
  type: str
builder:
  description: What add_host needs to reach the builder. The private key is only in the file.
  returned: state=builder
  type: dict
  contains:
    instance_id: {description: Builder instance ID., type: str, returned: always}
    state: {description: Instance state., type: str, returned: always}
    public_ip: {description: "Public IPv4 address, if any.", type: str, returned: always}
    private_ip: {description: Private IPv4 address., type: str, returned: always}
    address: {description: "Address to connect to, per O(ssh_interface).", type: str, returned: always}
    private_key_path: {description: File holding the private key., type: str, returned: always}
    key_name: {description: Name of the temporary key pair., type: str, returned: always}
    security_group_id: {description: ID of the temporary security group., type: str, returned: always}
    bake_id: {description: Bake ID., type: str, returned: always}
    base_ami: {description: Resolved base AMI ID., type: str, returned: always}
  sample: {"instance_id": "i-0abc", "address": "203.0.113.10", "private_key_path": "/tmp/.bake-key",
           "key_name": "immutable-infra-20260101120000-1a2b3c4d", "security_group_id": "sg-0abc",
           "bake_id": "20260101120000-1a2b3c4d", "base_ami": "ami-0base"}
removed:
  description: Per bake ID, the instances, key pairs and security groups removed (would be, in check mode).
  returned: state=absent
  type: dict
  sample: {"20260101120000-1a2b3c4d": {"instances": ["i-0abc"], "key_pairs": ["immutable-infra-2026..."],
           "security_groups": ["sg-0abc"]}}
kept:
  description: Image IDs kept as the newest O(keep).
  returned: state=retained
  type: list
  elements: str
deregister:
  description: Images deregistered (would be, in check mode) with their snapshots.
  returned: state=retained
  type: list
  elements: dict
  sample: [{"image_id": "ami-0old", "name": "web-1.0.0", "created": "2026-01-01T00:00:00.000Z",
            "snapshot_ids": ["snap-0abc"]}]
skipped:
  description: Older images not deregistered, with the reason (protected, or referenced by an instance, a launch
    configuration or a launch template version).
  returned: state=retained
  type: list
  elements: dict
  sample: [{"image_id": "ami-0live", "reason": "protected (listed in protected_ids)"}]
failed_regions:
  description: Region to error message, for copies that failed (the task fails).
  returned: failure of state=captured
  type: dict
actions:
  description: The changes made (or planned in check mode), in order.
  returned: state=builder or state=captured
  type: list
  elements: dict
"""

try:
    import botocore.session
except ImportError:
    pass  # AnsibleAWSModule reports a missing SDK

from ansible.module_utils.urls import open_url
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.immutable.infra.plugins.module_utils.aws._args import with_hidden_access_key
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import AmiError
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._run import run
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._run import validate

STATES = ["cached", "builder", "captured", "absent", "retained"]


def known_regions():
    session = botocore.session.get_session()
    regions = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return regions


def fetch_text(url):
    return open_url(url, timeout=10).read().decode()


def main():
    argument_spec = dict(
        state=dict(type="str", required=True, choices=STATES),
        fingerprint=dict(type="str"),
        bake_id=dict(type="str"),
        copy_regions=dict(type="list", elements="str", default=[]),
        base_ami=dict(type="str"),
        base_ami_filter=dict(
            type="dict",
            options=dict(
                name=dict(type="str", required=True),
                owners=dict(type="list", elements="str", default=["self"]),
                architecture=dict(type="str"),
            ),
        ),
        instance_type=dict(type="str", default="t3.micro"),
        subnet_id=dict(type="str"),
        vpc_id=dict(type="str"),
        associate_public_ip_address=dict(type="bool"),
        ssh_cidr=dict(type="str"),
        ip_check_url=dict(type="str", default="https://checkip.amazonaws.com"),
        private_key_path=dict(type="path"),
        key_type=dict(type="str", default="ed25519", choices=["ed25519", "rsa"]),
        volume_size=dict(type="int"),
        volume_type=dict(type="str", default="gp3"),
        iam_instance_profile=dict(type="str"),
        wait_for_ssh=dict(type="bool", default=True),
        ssh_timeout=dict(type="int", default=300),
        ssh_port=dict(type="int", default=22),
        ssh_host=dict(type="str"),
        ssh_interface=dict(type="str", default="public_ip", choices=["public_ip", "private_ip"]),
        instance_id=dict(type="str"),
        name=dict(type="str"),
        description=dict(type="str"),
        revision=dict(type="str"),
        family=dict(type="str"),
        tags=dict(type="dict"),
        encrypted=dict(type="bool", default=False),
        region_kms_keys=dict(type="dict", no_log=False),
        share_accounts=dict(type="list", elements="str", default=[]),
        share_organizations=dict(type="list", elements="str", default=[]),
        share_ous=dict(type="list", elements="str", default=[]),
        orphan_min_age=dict(type="int", default=3600),
        name_prefix=dict(type="str"),
        keep=dict(type="int", default=3),
        protected_ids=dict(type="list", elements="str", default=[]),
        wait_timeout=dict(type="int", default=1800),
        poll_interval=dict(type="int", default=15),
    )
    module = AnsibleAWSModule(
        argument_spec=with_hidden_access_key(argument_spec),
        supports_check_mode=True,
        mutually_exclusive=[["base_ami", "base_ami_filter"]],
        required_if=[["state", "builder", ["base_ami", "base_ami_filter"], True]],
    )
    state = module.params["state"]
    region = module.region
    try:
        validate(state, module.params, region, known_regions())
        retry = AWSRetry.jittered_backoff(retries=10)
        clients = {}

        def client_for(name):
            if name not in clients:
                clients[name] = module.client("ec2", region=name, retry_decorator=retry)
            return clients[name]

        autoscaling = module.client("autoscaling", retry_decorator=retry) if state == "retained" else None
        result = run(
            state, module.params, client_for(region), region, client_for, module.check_mode, fetch_text, autoscaling
        )
    except AmiError as e:
        if e.original is not None:
            module.fail_json_aws(e.original, msg=e.message, **e.result)
        module.fail_json(msg=e.message, **e.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
