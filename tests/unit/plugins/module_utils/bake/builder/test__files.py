"""The builder's files: its change list and the image configs its roles declare."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder import _files
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import parse_builder_files


def test_builder_files_give_the_change_list_and_the_declared_configs_in_name_order():
    output = '["/etc/a", "/opt/x"]\0/etc/immutable-infra/image-config.d/50-web.json\n{"cmd": ["nginx"]}\n' + (
        '\0/etc/immutable-infra/image-config.d/10-base.json\n{"ports": ["8080/tcp"], "cmd": ["sh"]}'
    )
    recorded, configs = parse_builder_files(output)
    assert recorded == ["/etc/a", "/opt/x"]
    assert configs == [{"ports": ["8080/tcp"], "cmd": ["sh"]}, {"cmd": ["nginx"]}]  # 10-base before 50-web
    assert parse_builder_files("") == (None, [])


@pytest.mark.parametrize(
    "content, message",
    [("{nope", "50-web.json in the builder is not valid JSON"), ('["cmd"]', "50-web.json in the builder must hold")],
)
def test_a_broken_declared_config_names_its_file(content, message):
    with pytest.raises(BuilderError, match=message):
        parse_builder_files("\0/etc/immutable-infra/image-config.d/50-web.json\n" + content)


def test_the_builder_files_script_reads_removes_and_separates_like_the_parser(tmp_path):
    """READ_BUILDER_FILES run by a real sh on a directory tree standing in for the builder's root."""
    root = tmp_path / "root"
    (root / "etc/immutable-infra/image-config.d").mkdir(parents=True)
    (root / ".immutable-infra-changes").write_text('["/srv"]')
    (root / "etc/immutable-infra/image-config.d/20-b.json").write_text('{"user": "svc"}')
    (root / "etc/immutable-infra/image-config.d/10-a.json").write_text('{"workdir": "/srv"}\n')
    script = _files.READ_BUILDER_FILES.replace(" /", f" {root}/").replace("=/", f"={root}/")
    out = subprocess.run(["sh", "-c", script, "sh", "rm"], capture_output=True, check=True).stdout.decode()
    assert parse_builder_files(out) == (["/srv"], [{"workdir": "/srv"}, {"user": "svc"}])
    assert not (root / ".immutable-infra-changes").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    script = _files.READ_BUILDER_FILES.replace(" /", f" {empty}/").replace("=/", f"={empty}/")
    out = subprocess.run(["sh", "-c", script, "sh"], capture_output=True, check=True).stdout.decode()
    assert parse_builder_files(out) == (None, [])


def test_the_missing_and_remove_scripts_run_by_a_real_sh(tmp_path):
    """LIST_MISSING names what does not exist (a dangling symlink exists); REMOVE_LISTED removes what it is given."""
    (tmp_path / "kept").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "tree/deep").mkdir(parents=True)
    listed = "".join(f"{tmp_path}/{name}\n" for name in ("kept", "dangling", "gone", "tree"))
    out = subprocess.run(["sh", "-c", _files.LIST_MISSING], input=listed.encode(), capture_output=True, check=True)
    assert out.stdout.decode().splitlines() == [f"{tmp_path}/gone"]
    subprocess.run(["sh", "-c", _files.REMOVE_LISTED], input=f"{tmp_path}/tree\n".encode(), check=True)
    assert not (tmp_path / "tree").exists() and (tmp_path / "kept").exists()
