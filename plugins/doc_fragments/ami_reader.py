# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options of every module that reads an AMI artifact's tags and evidence (artifact/_ami_record.boto3_ami_reader,
    argument spec: AMI_READER_ARGUMENT_SPEC there)."""

    DOCUMENTATION = r"""
options:
  region:
    description: For an AMI ID without a region, the region to look it up in (default the C(AWS_REGION)/profile one).
    type: str
  endpoint_url:
    description: For AMIs, another EC2 and S3 endpoint (a test service); default AWS's own.
    type: str
"""
