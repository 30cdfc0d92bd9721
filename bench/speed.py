"""Issue 17's speed table: a user's own bake against `docker build` and Packer, side by side in one run.

Workload: a user's OWN project in a temporary directory, as a user would have it: two roles of their own
(shop_base: nginx via apt, a user, directories, the nginx site, enabled, the default site off; shop_page: a page
template, a config file, a line in it: 9 tasks in all), the collection installed from its tarball
(`ansible-galaxy collection build` of this checkout, `ansible-galaxy collection install --offline` into the
project's collections path; the dependencies come from the venv's ansible package), and the user's own playbook
`- ansible.builtin.import_playbook: immutable.infra.bake` with bake_roles etc. as vars. The same steps as
bench/docker/speed/Dockerfile for `docker build`, and as a Packer template (docker builder from the same base
image, `pull: false`, `commit: true`, the ansible provisioner over community.docker.docker with the same two
roles and the seal, docker-tag and docker-push post-processors).

Per run (a fresh app name, so nothing is cached from an earlier run):
  cold          our bake with nothing cached | docker build --no-cache, then push | packer build (with its push)
  last role     only shop_page changed (its defaults): our bake from the cache layer | docker build with its cache,
                then push (only the new layers)
  nothing       the same inputs again: our no-op re-bake (a cache hit) | docker build with its cache, then push
  again         shop_page changed once more: the same as "last role", a second time
  split first   shop_page changed, our bake with bake_artifact_layers: split in the user's playbook (the rows above
                leave it unset, its default): it makes the kept layer (docs/bake.md, "Two layers: split")
  split again   shop_page changed once more, split: the kept layer is reused, only the top layer is made and pushed
  overlay2      shop_page changed once more, one layer, with bake_change_listing: overlay2 (the opt-in accelerator
                that reads the builder's changes from Docker's storage directory instead of the Engine API: off the
                default path, so its gain is shown here and counted in no "met" of the default rows)
  split overlay2  the same, split (the kept layer reused) and overlay2
In each row docker build goes first in odd runs and our bake in even ones (the apt mirror, the page cache); Packer
runs after both cold builds.

Prints the medians over --runs runs, each run's figures, the ratios issue 17 sets as targets (from the medians and
per run: the bakes of one run ran back to back) and, once, the per-step breakdown of one more incremental bake
each way (single, split, split with the overlay2 listing; ansible.posix.profile_tasks, the 12 slowest tasks) and
of a cold bake under a fresh name (the 20 slowest).
Installs Debian's `packer` with apt-get when it is missing (never in the tests). Leaves nothing behind: the
bench's containers, images, temporary directories and the manifests it pushed are removed at the end (the registry
frees the blobs at its own garbage collection).
Needs scripts/setup.sh to have run (venv active, Docker Engine, registry, base image).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("IMMUTABLE_STATE_DIR", ROOT / ".local"))
DOCKER_CONTEXT = ROOT / "bench" / "docker" / "speed"
REGISTRY = os.environ.get("IMMUTABLE_REGISTRY", "127.0.0.1:5000")
BASE = os.environ.get("IMMUTABLE_BASE_IMAGE", "immutable-infra/base:bookworm")
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)

SHOP_BASE_TASKS = """---
- name: Install nginx
  ansible.builtin.apt:
    name: nginx-light
    update_cache: true
    install_recommends: false

- name: Create the shop user
  ansible.builtin.user:
    name: shop
    system: true
    shell: /usr/sbin/nologin
    create_home: false

- name: Create the shop directories
  ansible.builtin.file:
    path: "{{ item }}"
    state: directory
    owner: shop
    mode: "0755"
  loop: [/srv/shop/www, /srv/shop/conf, /var/log/shop]

- name: Install the nginx site
  ansible.builtin.copy:
    src: shop.nginx
    dest: /etc/nginx/sites-available/shop
    mode: "0644"

- name: Enable the site
  ansible.builtin.file:
    src: /etc/nginx/sites-available/shop
    dest: /etc/nginx/sites-enabled/shop
    state: link

- name: Disable the default site
  ansible.builtin.file:
    path: /etc/nginx/sites-enabled/default
    state: absent
"""

SHOP_PAGE_TASKS = """---
- name: Render the page
  ansible.builtin.template:
    src: index.html.j2
    dest: /srv/shop/www/index.html
    mode: "0644"

- name: Install the shop config
  ansible.builtin.copy:
    src: shop.ini
    dest: /srv/shop/conf/shop.ini
    mode: "0644"

- name: Set the release in the config
  ansible.builtin.lineinfile:
    path: /srv/shop/conf/shop.ini
    regexp: "^release="
    line: "release={{ shop_page_release }}"
"""

ANSIBLE_CFG = """[defaults]
collections_path = ./collections
roles_path = ./roles
inventory = ./inventory.yml
interpreter_python = auto_silent
retry_files_enabled = False

[connection]
pipelining = True
"""

INVENTORY = """all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""

# the ratios issue 17 sets: (label, numerator, denominator, limit)
TARGETS = [
    ("incremental / docker build+push incremental", "ours_incremental", "docker_incremental_push", 3.0),
    ("incremental / our cold", "ours_incremental", "ours_cold", 0.3),
    ("again / docker build+push again", "ours_again", "docker_again_push", 3.0),
    ("again / our cold", "ours_again", "ours_cold", 0.3),
    ("split again / docker build+push again", "ours_split_again", "docker_split_again_push", 3.0),
    ("split again / our cold", "ours_split_again", "ours_cold", 0.3),
    ("split overlay2 / docker build+push", "ours_split_overlay2", "docker_split_overlay2_push", 3.0),
    ("split overlay2 / our cold", "ours_split_overlay2", "ours_cold", 0.3),
    ("cold / docker build+push cold", "ours_cold", "docker_cold_push", 1.6),
    ("cold / packer", "ours_cold", "packer_cold", 0.6),
]
NOOP_TARGET = 1.5


def credentials() -> dict[str, str]:
    values = {}
    for line in (STATE / "registry" / "credentials.env").read_text().splitlines():
        key, _sep, value = line.partition("=")
        if key:
            values[key] = value
    return values


def run(cmd: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(cmd)}\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return took, result.stdout


def ensure_packer() -> None:
    if shutil.which("packer"):
        return
    print("installing Debian's packer (apt-get install -y packer)", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "packer"], capture_output=True, check=True)


def user_project(work: Path, env: dict[str, str]) -> Path:
    """The user's project: ansible.cfg, inventory, two roles, the collection installed from its tarball."""
    project = work / "project"
    for role, tasks in (("shop_base", SHOP_BASE_TASKS), ("shop_page", SHOP_PAGE_TASKS)):
        (project / "roles" / role / "tasks").mkdir(parents=True)
        (project / "roles" / role / "tasks" / "main.yml").write_text(tasks)
    (project / "roles" / "shop_base" / "files").mkdir()
    shutil.copy(DOCKER_CONTEXT / "shop.nginx", project / "roles" / "shop_base" / "files" / "shop.nginx")
    for sub in ("files", "templates", "defaults"):
        (project / "roles" / "shop_page" / sub).mkdir()
    shutil.copy(DOCKER_CONTEXT / "shop.ini", project / "roles" / "shop_page" / "files" / "shop.ini")
    shutil.copy(DOCKER_CONTEXT / "index.html.j2", project / "roles" / "shop_page" / "templates" / "index.html.j2")
    (project / "ansible.cfg").write_text(ANSIBLE_CFG)
    (project / "inventory.yml").write_text(INVENTORY)
    dist = work / "dist"
    run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(dist), str(ROOT)], env, work)
    tarball = next(dist.glob("immutable-infra-*.tar.gz"))
    run(["ansible-galaxy", "collection", "install", "--offline", "-p", "collections", str(tarball)], env, project)
    if not (project / "collections" / "ansible_collections" / "immutable" / "infra" / "MANIFEST.json").is_file():
        sys.exit(f"the collection did not install from {tarball}")
    return project


def set_release(project: Path, context: Path, release: str) -> None:
    """Change the last role (its defaults) and the Dockerfile context's rendered page the same way."""
    (project / "roles" / "shop_page" / "defaults" / "main.yml").write_text(f"---\nshop_page_release: {release}\n")
    page = (DOCKER_CONTEXT / "index.html.j2").read_text().replace("{{ shop_page_release }}", release)
    (context / "index.html").write_text(page)


def write_bake_playbook(project: Path, app: str, split: bool = False, overlay2: bool = False) -> Path:
    playbook = project / "bake.yml"
    vars_ = {
        "bake_name": app,
        "bake_roles": ["shop_base", "shop_page"],
        "bake_image_config": {"cmd": ["nginx", "-g", "daemon off;"], "ports": ["80/tcp"]},
        "bake_registry": REGISTRY,
        "bake_base_image": BASE,
        "bake_artifacts_dir": str(project / "artifacts"),
    }
    if split:  # else the default is left to the bake, as a user who does not set it has it
        vars_["bake_artifact_layers"] = "split"
    if overlay2:  # the opt-in accelerator (docs/bake.md, bake_change_listing)
        vars_["bake_change_listing"] = "overlay2"
    play = [{"name": "Bake the shop image", "ansible.builtin.import_playbook": "immutable.infra.bake", "vars": vars_}]
    playbook.write_text("---\n" + json.dumps(play, indent=1) + "\n")  # JSON is YAML
    return playbook


def write_packer(project: Path, app: str, container: str) -> Path:
    (project / "packer.yml").write_text(
        "---\n- name: Provision the shop image\n  hosts: all\n  gather_facts: false\n"
        "  roles: [shop_base, shop_page, immutable.infra.seal]\n"
    )
    extra = f"ansible_host={container} ansible_connection=community.docker.docker"
    extra += " ansible_python_interpreter=/usr/bin/python3"
    template = {
        "builders": [
            {
                "type": "docker",
                "image": BASE,
                "pull": False,
                "commit": True,
                "run_command": ["-d", "-i", "-t", "--name", container, "--entrypoint=/bin/sh", "--", "{{.Image}}"],
                "changes": ['CMD ["nginx", "-g", "daemon off;"]', "EXPOSE 80"],
            }
        ],
        "provisioners": [
            {
                "type": "ansible",
                "user": "root",
                "playbook_file": str(project / "packer.yml"),
                "extra_arguments": ["--extra-vars", extra],
            }
        ],
        "post-processors": [
            [
                {"type": "docker-tag", "repository": f"{REGISTRY}/{app}-packer", "tag": "cold"},
                {"type": "docker-push"},
            ]
        ],
    }
    path = project / "packer.json"
    path.write_text(json.dumps(template, indent=1))
    return path


def docker_build(context: Path, tag: str, release: str, env: dict[str, str], no_cache: bool) -> tuple[float, float]:
    """Seconds of the build and of the push that follows it."""
    cmd = ["docker", "build", "-q", "--build-arg", f"BASE={BASE}", "--build-arg", f"RELEASE={release}", "-t", tag]
    build, _out = run([*cmd, *(["--no-cache"] if no_cache else []), "."], env, context)
    push, _out = run(["docker", "push", "-q", tag], env, context)
    return build, push


def profile_breakdown(
    project: Path, playbook: Path, env: dict[str, str], top: int = 12
) -> tuple[float, float, list[tuple[str, float]]]:
    """The wall time, the sum of every task's time and the `top` slowest tasks of one profiled bake."""
    profiled = dict(env, ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_TASK_OUTPUT_LIMIT="100")
    took, out = run(["ansible-playbook", str(playbook)], profiled, project)
    # profile_tasks' summary lines: "<play> : <task> ---...--- 1.23s"
    rows = re.findall(r"^(.+?) -{3,} (\d+\.\d+)s$", out, flags=re.MULTILINE)
    times: dict[str, float] = {}
    for name, seconds in rows:
        times[name.strip()] = float(seconds)  # the summary repeats the per-task lines: the last one wins
    return took, sum(times.values()), sorted(times.items(), key=lambda item: item[1], reverse=True)[:top]


def registry_request(method: str, path: str, auth: str) -> urllib.request.Request:
    request = urllib.request.Request(f"http://{REGISTRY}{path}", method=method)
    request.add_header("Authorization", f"Basic {auth}")
    request.add_header("Accept", MANIFEST_TYPES)
    return request


def delete_repository(repo: str, creds: dict[str, str]) -> None:
    """Delete every manifest of a repository the bench pushed to (the registry has deletion enabled)."""
    user, password = creds.get("IMMUTABLE_REGISTRY_USER", ""), creds.get("IMMUTABLE_REGISTRY_PASSWORD", "")
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(registry_request("GET", f"/v2/{repo}/tags/list", auth), timeout=10) as answer:
            tags = json.load(answer).get("tags") or []
        digests = set()
        for tag in tags:
            with urllib.request.urlopen(registry_request("HEAD", f"/v2/{repo}/manifests/{tag}", auth), timeout=10) as a:
                digests.add(a.headers["Docker-Content-Digest"])
        for digest in digests:
            with urllib.request.urlopen(registry_request("DELETE", f"/v2/{repo}/manifests/{digest}", auth), timeout=10):
                pass
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            print(f"warning: could not delete {repo} from the registry: HTTP {exc.code}", file=sys.stderr)


def clean_up(app: str, creds: dict[str, str], env: dict[str, str]) -> None:
    rows = ("cold", "incremental", "again", "split_first", "split_again", "overlay2", "split_overlay2", "noop")
    images = [f"{REGISTRY}/{app}-docker:{tag}" for tag in rows]
    images.append(f"{REGISTRY}/{app}-packer:cold")
    # the bake's cache layers and the artifacts it committed and pushed (tagged <registry>/<app>:fp-…)
    cache = subprocess.run(
        ["docker", "image", "ls", "-q", "--filter", f"reference=immutable-infra-cache/{app}"]
        + ["--filter", f"reference={REGISTRY}/{app}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    subprocess.run(["docker", "rm", "-f", f"{app}-packer"], env=env, capture_output=True, check=False)
    subprocess.run(["docker", "image", "rm", "-f", *images, *cache], env=env, capture_output=True, check=False)
    for repo in (app, f"{app}-docker", f"{app}-packer"):
        delete_repository(repo, creds)


def one_run(project: Path, context: Path, app: str, env: dict[str, str], packer: bool, ours_first: bool) -> dict:
    """One run's figures; in each row docker build and our bake take turns to go first, run by run."""
    got: dict[str, float] = {}
    playbook = write_bake_playbook(project, app)
    tag = f"{REGISTRY}/{app}-docker"

    def pair(row: str, release: str) -> None:
        def docker() -> None:
            build, push = docker_build(context, f"{tag}:{row}", release, env, no_cache=row == "cold")
            got[f"docker_{row}"], got[f"docker_{row}_push"] = build, build + push

        def ours() -> None:
            got[f"ours_{row}"] = run(["ansible-playbook", str(playbook)], env, project)[0]

        set_release(project, context, release)
        for step in (ours, docker) if ours_first else (docker, ours):
            step()

    pair("cold", "one")
    if packer:  # from the same local base image, after both cold builds
        template = write_packer(project, app, f"{app}-packer")
        got["packer_cold"] = run(["packer", "build", "-color=false", str(template)], env, project)[0]
    pair("noop", "one")  # nothing changed
    pair("incremental", "two")  # only the last role changed
    pair("again", "three")  # the last role changed again
    playbook = write_bake_playbook(project, app, split=True)
    pair("split_first", "four")  # the same change with bake_artifact_layers: split, which makes the kept layer
    pair("split_again", "five")  # and once more: the kept layer reused
    playbook = write_bake_playbook(project, app, overlay2=True)
    pair("overlay2", "six")  # one layer again, the changes read by the opt-in accelerator
    playbook = write_bake_playbook(project, app, split=True, overlay2=True)
    pair("split_overlay2", "seven")  # split (its kept layer reused) and the accelerator
    return got


def print_table(results: dict[str, list[float]], runs: int) -> dict[str, float]:
    med = {key: statistics.median(values) for key, values in results.items() if values}

    def cell(key: str) -> str:
        return f"{med[key]:6.2f} s" if key in med else "     —  "

    print(f"\nmedians over {runs} runs (wall seconds)")
    print(f"  {'run':<36} {'immutable.infra':>16} {'docker build':>13} {'+ push':>9} {'packer+ansible':>15}")
    rows = (
        ("cold", "cold"),
        ("only the last role changed", "incremental"),
        ("the last role changed again", "again"),
        ("the last role changed, split: first", "split_first"),
        ("the last role changed, split: again", "split_again"),
        ("again, overlay2 listing (opt-in)", "overlay2"),
        ("again, split + overlay2 (opt-in)", "split_overlay2"),
        ("nothing changed", "noop"),
    )
    for label, key in rows:
        ours, docker, pushed, packer = (
            cell(name) for name in (f"ours_{key}", f"docker_{key}", f"docker_{key}_push", f"packer_{key}")
        )
        print(f"  {label:<36} {ours:>16} {docker:>13} {pushed:>9} {packer:>15}")
    return med


def print_targets(results: dict[str, list[float]], med: dict[str, float]) -> None:
    print("targets (issue 17): median ratio, per run, target")
    for label, num, den, limit in TARGETS:
        if num not in med or den not in med:
            continue
        ratio = med[num] / med[den]
        paired = [a / b for a, b in zip(results[num], results[den], strict=True)]
        verdict = "met" if ratio <= limit else "MISSED"
        print(f"  {label:<46} {ratio:5.2f}  ({', '.join(f'{r:.2f}' for r in paired)})  <= {limit}  {verdict}")
    noop = med["ours_noop"]
    print(
        f"  {'no-op re-bake (s)':<46} {noop:5.2f}  ({', '.join(f'{r:.2f}' for r in results['ours_noop'])})"
        f"  <= {NOOP_TARGET}  {'met' if noop <= NOOP_TARGET else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-packer", action="store_true", help="leave the Packer column out")
    parser.add_argument("--no-breakdown", action="store_true", help="leave the per-step breakdown out")
    args = parser.parse_args()

    if not args.no_packer:
        ensure_packer()
    creds = credentials()
    work = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    # the user's shell: no ANSIBLE_* settings of this checkout; the registry credentials as the bake reads them;
    # a docker client configuration of its own, so the docker and Packer logins leave nothing in ~/.docker
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(creds)
    env.update({"DOCKER_CONFIG": str(work / "docker-config"), "PACKER_CACHE_DIR": str(work / "packer-cache")})
    env["PACKER_CONFIG_DIR"] = str(work / "packer-config")  # else Packer makes ~/.packer.d
    env["CHECKPOINT_DISABLE"] = "1"  # Packer's version check over the network
    context = work / "docker"
    shutil.copytree(DOCKER_CONTEXT, context)
    (context / "index.html.j2").unlink()
    results: dict[str, list[float]] = {}
    apps: list[str] = []
    breakdowns: dict[str, tuple[float, float, list[tuple[str, float]]]] = {}
    try:
        run(
            ["docker", "login", "-u", creds["IMMUTABLE_REGISTRY_USER"], "--password-stdin", REGISTRY],
            env,
            work,
            stdin=creds["IMMUTABLE_REGISTRY_PASSWORD"],
        )
        project = user_project(work, env)
        for index in range(args.runs):
            app = f"speed{uuid.uuid4().hex[:8]}"
            apps.append(app)
            got = one_run(project, context, app, env, packer=not args.no_packer, ours_first=index % 2 == 1)
            for key, value in got.items():
                results.setdefault(key, []).append(value)
            print(f"run {index + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in got.items()), flush=True)
            if index == args.runs - 1 and not args.no_breakdown:
                for row, release, split, overlay2 in (
                    ("incremental", "eight", False, False),
                    ("split", "nine", True, False),
                    ("split_overlay2", "ten", True, True),
                ):
                    set_release(project, context, release)
                    playbook = write_bake_playbook(project, app, split=split, overlay2=overlay2)
                    breakdowns[row] = profile_breakdown(project, playbook, env)
                # a cold bake under a fresh name: nothing cached, every step a cold bake takes
                cold_app = f"speed{uuid.uuid4().hex[:8]}"
                apps.append(cold_app)
                breakdowns["cold"] = profile_breakdown(project, write_bake_playbook(project, cold_app), env, top=20)
            clean_up(app, creds, env)
    finally:
        for app in apps:
            clean_up(app, creds, env)
        shutil.rmtree(work, ignore_errors=True)

    med = print_table(results, args.runs)
    print_targets(results, med)
    titles = (
        ("incremental", "an incremental bake (only the last role changed)"),
        ("split", "an incremental bake with bake_artifact_layers: split, its kept layer reused"),
        ("split_overlay2", "the same, with bake_change_listing: overlay2 (the opt-in accelerator)"),
        ("cold", "a cold bake"),
    )
    for row, title in titles:
        if row not in breakdowns:
            continue
        took, tasks, slowest = breakdowns[row]
        print(f"\n{title} per step, ansible.posix.profile_tasks, top {len(slowest)}:")
        for name, seconds in slowest:
            print(f"  {seconds:6.2f} s  {name}")
        print(f"  wall {took:.2f} s: the tasks {tasks:.2f} s, the rest (start-up, plays) {took - tasks:.2f} s")


if __name__ == "__main__":
    main()
