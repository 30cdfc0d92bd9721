# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The hygiene rules' options (image_hygiene on a builder, image_layer_hygiene on every layer of an image;
    argument spec: bake/_hygiene.hygiene_argument_spec)."""

    DOCUMENTATION = r"""
options:
  forbidden:
    description:
      - Absolute path globs (C(**) matches any depth) of files that must not be in the image, for example
        V(/etc/app/credentials.json) or V(/opt/app/**/*.key).
    type: list
    elements: str
    default: []
  allow:
    description:
      - Absolute path globs of files that belong in the image although a check flags them (for example a test key
        shipped on purpose). Matched with C(fnmatch) against the path in the image.
    type: list
    elements: str
    default: []
  scan_paths:
    description:
      - Directories whose files are searched for private keys, credential-bearing kubeconfigs and token-shaped
        strings (files up to 1 MiB, symbolic links not followed).
    type: list
    elements: str
    default: [/etc, /root, /home, /opt, /srv, /tmp, /var/tmp, /usr/local/etc]
"""
