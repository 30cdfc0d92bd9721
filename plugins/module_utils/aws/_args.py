# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The common AWS options of the collection's AWS modules, with the access key ID hidden like the secret key.

PRIVATE to the collection: no API promise outside it.
"""

from __future__ import annotations

from ansible_collections.amazon.aws.plugins.module_utils.modules import aws_argument_spec


def with_hidden_access_key(argument_spec: dict) -> dict:
    """`argument_spec` plus amazon.aws's access_key option (its aliases, its AWS_ACCESS_KEY_ID fallbacks) marked
    no_log. amazon.aws leaves the key ID visible, so at -vvv it is printed in every task's invocation, also when it
    came from the environment; it names the credential, so the collection's modules hide it from output, logs and
    results, as they hide the secret key."""
    spec = dict(argument_spec)
    spec["access_key"] = dict(aws_argument_spec()["access_key"], no_log=True)
    return spec
