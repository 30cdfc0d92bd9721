"""Benchmark: bake_ami copies regions in parallel, and a cache hit costs one DescribeImages call.

Runs the real _capture.Capture / _cache.CacheLookup code against in-process fake EC2 clients (wrapped in amazon.aws's
RetryingBotoClientWrapper like the module's clients), each CopyImage taking --delay seconds. Prints the wall time for
1 region and for N regions (target: N regions <= 1.5x one region) and the number of describe calls of a cache hit
(target: 1). Exit status 1 if a target is missed.

    .venv/bin/python bench/ami_copy_parallel.py [--delay 0.5] [--regions 4]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / ".local" / "collections"))

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry  # noqa: E402
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper  # noqa: E402

from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _cache  # noqa: E402
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _capture  # noqa: E402
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami import _common  # noqa: E402

REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-2", "eu-central-1", "ap-south-1"]
FINGERPRINT = "sha256:bench"


class FakeWaiter:
    def __init__(self, client):
        self.client = client

    def wait(self, WaiterConfig=None, **params):  # noqa: N803 (botocore's spelling)
        self.client.describe_images(**params)


class FakeEc2:
    """Just enough of an EC2 client for Capture/CacheLookup; counts calls, CopyImage sleeps `delay`."""

    def __init__(self, region: str, delay: float, images: dict | None = None):
        self.region = region
        self.delay = delay
        self.images = images or {}
        self.calls: Counter = Counter()
        self.lock = threading.Lock()

    def _count(self, name):
        with self.lock:
            self.calls[name] += 1

    def get_waiter(self, name):
        return FakeWaiter(self)

    def describe_images(self, ImageIds=None, Filters=None, Owners=None):  # noqa: N803
        self._count("describe_images")
        if ImageIds:
            return {"Images": [self.images[i] for i in ImageIds if i in self.images]}
        wanted = {f["Name"]: f["Values"] for f in Filters or []}
        fp = wanted.get(f"tag:{_common.TAG_FINGERPRINT}", [None])[0]
        found = [i for i in self.images.values() if _common.tag_dict(i).get(_common.TAG_FINGERPRINT) == fp]
        return {"Images": found}

    def copy_image(self, **params):
        self._count("copy_image")
        time.sleep(self.delay)
        image_id = f"ami-{self.region}"
        self.images[image_id] = {"ImageId": image_id, "State": "available", "Name": params["Name"], "Tags": []}
        return {"ImageId": image_id}

    def create_tags(self, Resources, Tags):  # noqa: N803
        self._count("create_tags")
        for resource in Resources:
            if resource in self.images:
                current = _common.tag_dict(self.images[resource])
                current.update({t["Key"]: t["Value"] for t in Tags})
                self.images[resource]["Tags"] = _common.tag_list(current)
        return {}


def wrap(client):
    return RetryingBotoClientWrapper(client, AWSRetry.jittered_backoff(retries=3, delay=0))


def source_image() -> dict:
    tags = {
        _common.TAG_FINGERPRINT: FINGERPRINT,
        _common.TAG_ROLE: _common.ROLE_IMAGE,
        _common.TAG_CREATED: "2026-01-01T00:00:00Z",
    }
    return {"ImageId": "ami-src", "State": "available", "Name": "bench-1", "Tags": _common.tag_list(tags)}


def time_capture(copy_count: int, delay: float) -> tuple[float, dict]:
    home = REGIONS[0]
    clients = {home: wrap(FakeEc2(home, delay, {"ami-src": source_image()}))}
    for region in REGIONS[1 : 1 + copy_count]:
        clients[region] = wrap(FakeEc2(region, delay))
    params = {
        "fingerprint": FINGERPRINT,
        "name": "bench-1",
        "wait_timeout": 60,
        "copy_regions": REGIONS[1 : 1 + copy_count],
    }
    capture = _capture.Capture(clients[home], home, clients.__getitem__, check_mode=False, poll_interval=0)
    started = time.perf_counter()
    result = capture.run(params)
    return time.perf_counter() - started, result["amis"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.5, help="seconds each CopyImage takes (default 0.5)")
    parser.add_argument("--regions", type=int, default=4, help="copy regions for the parallel run (default 4, max 5)")
    args = parser.parse_args()

    one, amis_one = time_capture(1, args.delay)
    many, amis_many = time_capture(args.regions, args.delay)
    ratio = many / one
    print(f"copy to 1 region:  {one:.3f}s  ({len(amis_one)} AMIs incl. source)")
    print(f"copy to {args.regions} regions: {many:.3f}s  ({len(amis_many)} AMIs incl. source)")
    print(f"ratio {args.regions}/1: {ratio:.2f}x (target <= 1.5x; sequential would be ~{args.regions}x)")

    fake = FakeEc2(REGIONS[0], 0, {"ami-src": source_image()})
    result = _cache.CacheLookup(wrap(fake), REGIONS[0]).run(FINGERPRINT, [])
    describes = sum(n for name, n in fake.calls.items() if name.startswith("describe"))
    print(
        f"cache hit: hit={result['hit']} describe calls={describes} total calls={sum(fake.calls.values())} (target 1)"
    )
    ok = ratio <= 1.5 and result["hit"] and describes == 1 and sum(fake.calls.values()) == 1
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
