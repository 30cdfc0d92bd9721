# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ledger
author:
  - immutable.infra contributors (@immutable-infra)
version_added: 0.1.0
short_description: Read the promotion ledger file from a playbook
description:
  - Reads the local JSON ledger that M(immutable.infra.ledger) writes (the V(file) backend), on the controller.
  - "Each term is C(<app>) or C(<app>/<env>): C(<app>/<env>) gives that entry (or one O(field) of it), C(<app>)
    gives a mapping environment -> entry (or -> O(field)). Without terms, the whole ledger."
  - A missing entry gives V(null); a missing ledger file reads as an empty ledger; a corrupt one fails with how to
    recover.
  - For the V(ssm) backend use M(immutable.infra.ledger_info).
options:
  _terms:
    description: C(<app>) or C(<app>/<env>) names. None for the whole ledger.
    type: list
    elements: str
    required: false
  path:
    description: The ledger JSON file on the controller.
    type: path
    required: true
  field:
    description: Which part of each entry to return.
    type: str
    choices: [entry, live, previous, history]
    default: entry
seealso:
  - module: immutable.infra.ledger
  - module: immutable.infra.ledger_info
"""

EXAMPLES = r"""
- name: Deploy to staging the artifact that is live in dev
  ansible.builtin.debug:
    msg: "{{ lookup('immutable.infra.ledger', 'web/dev', field='live', path=ledger_path) }}"

- name: What is live for web, per environment
  ansible.builtin.debug:
    msg: "{{ lookup('immutable.infra.ledger', 'web', field='live', path=ledger_path) }}"

- name: The whole ledger
  ansible.builtin.debug:
    msg: "{{ lookup('immutable.infra.ledger', path=ledger_path) }}"
"""

RETURN = r"""
_raw:
  description:
    - One value per term. For C(<app>/<env>) the entry (live, previous, history) or the chosen O(field), V(null)
      when there is none. For C(<app>) a mapping environment -> entry or field. Without terms, the whole ledger
      (schema, apps).
  type: list
  elements: raw
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError


def _pick(entry, field):
    if entry is None or field == "entry":
        return entry
    return entry.get(field)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        field = self.get_option("field")
        try:
            state = FileLedger(self.get_option("path")).read()
        except LedgerError as exc:
            raise AnsibleLookupError(exc.message) from None
        if not terms:
            return [state]
        results = []
        for term in terms:
            app, sep, env = str(term).partition("/")
            if not app or (sep and not env) or "/" in env:
                raise AnsibleLookupError(f"ledger lookup term {term!r} is not <app> or <app>/<env>")
            envs = state["apps"].get(app, {})
            if env:
                results.append(_pick(envs.get(env), field))
            else:
                results.append({name: _pick(entry, field) for name, entry in envs.items()})
        return results
