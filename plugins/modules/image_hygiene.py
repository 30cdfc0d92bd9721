#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_hygiene
short_description: Refuse to capture a builder that still holds keys, credentials, histories or host identity
version_added: 0.1.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Runs on the builder right before it is captured (after the C(immutable.infra.seal) role), over whatever
    connection reaches it (C(community.docker.docker) for a container builder, SSH for an EC2 builder), so the same
    checks guard container images and AMIs.
  - Fails, listing every offending file and why, when it finds SSH host keys (C(/etc/ssh/ssh_host_*)), users' SSH
    keys (C(~/.ssh/id_*)), non-empty shell or tool histories in C(/root) and C(/home/*), a non-empty
    C(/etc/machine-id) or C(/var/lib/dbus/machine-id), or any file matching O(forbidden).
  - "Credential files of command-line clients in C(/root) and C(/home/*): C(.aws/credentials), a C(.config/gcloud)
    or C(.azure) directory holding any file, C(.docker/config.json) whose C(auths) hold a credential (C(auth),
    C(identitytoken), C(registrytoken), C(password); entries served by a credential helper are empty and pass),
    C(.netrc), C(.git-credentials) and C(.kube/config)."
  - "Secrets in the content of the files under O(scan_paths): PEM and OpenSSH private keys
    (C(-----BEGIN ... PRIVATE KEY-----)), kubeconfigs (C(kind: Config)) with a client key, token or password, and
    token-shaped strings: AWS access key IDs (C(AKIA)/C(ASIA) and 16 characters; AWS's documentation example
    C(AKIAIOSFODNN7EXAMPLE) is ignored), C(aws_secret_access_key) assignments, C(Bearer) tokens of 20 or more
    characters and GitHub tokens (C(ghp_) and the like)."
  - The search is bounded; only regular files of at most 1 MiB are read, symbolic links are not followed, at most
    200000 files are read, and token shapes are searched only in text files (no NUL byte in the first 8 KiB).
  - A finding names the path and the kind of secret, never the secret itself.
  - Read only; never changes a file. The C(immutable.infra.bake) playbook runs it as the last step of provisioning.
extends_documentation_fragment:
  - immutable.infra.hygiene_rules
attributes:
  check_mode:
    support: full
    description: Read only; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  idempotent:
    support: full
    description: Never changes anything.
seealso:
  - module: immutable.infra.push_image
"""

EXAMPLES = r"""
- name: Check the sealed builder before it is captured
  immutable.infra.image_hygiene:
    forbidden:
      - /etc/app/credentials.json
      - /opt/app/**/*.key
    allow:
      - /opt/app/tests/fixtures/test.key
"""

RETURN = r"""
findings:
  description: Every offending file, with why it must not be captured. Empty when the builder is clean.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: Path on the builder.
      type: str
      sample: /root/.bash_history
    reason:
      description: Why the file must not be in the image.
      type: str
      sample: shell or tool history
scanned:
  description: Number of files whose content was searched for private keys and tokens.
  returned: always
  type: int
  sample: 1250
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import HygieneChecker
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import HygieneError
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import failure_message
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import hygiene_argument_spec


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **hygiene_argument_spec(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        checker = HygieneChecker(forbidden=p["forbidden"], allow=p["allow"], scan_paths=p["scan_paths"])
        findings = checker.run()
    except HygieneError as exc:
        module.fail_json(msg=str(exc), findings=[], scanned=0)
    if findings:
        module.fail_json(msg=failure_message(findings), findings=findings, scanned=checker.scanned)
    module.exit_json(changed=False, findings=[], scanned=checker.scanned)


if __name__ == "__main__":
    main()
