"""Unit tests for the drift_info module: argument handling and results, with a stand-in docker CLI script.

The module runs in-process through ansible's patch_module_args; `docker_binary` points at a small script that
answers like the docker CLI for one app/env, so the module's wiring (engine, upstream file, result shape) is
exercised without a Docker Engine (the integration test covers the real one). The script is not named `docker`, so
the engine interface takes the CLI, not the local daemon's socket (docker/_engine.py).
"""

from __future__ import annotations

import json
import stat

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import render_upstream
from ansible_collections.immutable.infra.plugins.modules import drift_info

A = "127.0.0.1:5000/web@sha256:" + "a" * 64


def run(args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        drift_info.main()
    out = json.loads(capsys.readouterr().out)
    out["rc"] = info.value.code
    return out


def fake_docker(tmp_path, diff: str, exit_code: int = 0):
    inspect = [
        {
            "Name": "/web-prod-blue",
            "Image": "sha256:cfg",
            "Config": {
                "Image": A,
                "Labels": {"immutable.infra.artifact": A, "immutable.infra.colour": "blue"},
            },
            "State": {"Running": True, "Status": "running"},
        }
    ]
    script = tmp_path / "docker-stand-in"
    script.write_text(
        "#!/bin/sh\n"
        f"[ {exit_code} -ne 0 ] && {{ echo 'Cannot connect to the Docker daemon' >&2; exit {exit_code}; }}\n"
        'case "$1" in\n'
        """  ps) case "$*" in *name=*) echo '{"Names": "web-prod-blue", "Labels": ""}';; esac;;\n"""
        f"  container) echo '{json.dumps(inspect)}';;\n"
        f"  image) echo '{json.dumps([{'Id': 'sha256:cfg', 'RepoDigests': [A]}])}';;\n"
        f"  diff) printf '{diff}';;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def conf_dir(tmp_path):
    path = tmp_path / "conf.d"
    path.mkdir()
    (path / "web-prod.upstream.conf").write_text(
        render_upstream("web", "prod", {"blue": 100}, {"blue": 8101, "green": 8102})
    )
    return str(path)


def test_no_drift_then_drift_after_a_changed_file(tmp_path, capsys):
    envs = [{"name": "prod", "expected": A, "nginx_conf_dir": conf_dir(tmp_path)}]
    clean = run(
        {"app": "web", "environments": envs, "docker_binary": fake_docker(tmp_path, "C /run\\nA /run/nginx.pid\\n")},
        capsys,
    )
    assert clean["rc"] == 0 and clean["changed"] is False and clean["drift"] is False
    assert clean["environments"]["prod"]["live_colour"] == "blue"
    assert clean["environments"]["prod"]["image_digests"] == ["sha256:" + "a" * 64]

    dirty = run({"app": "web", "environments": envs, "docker_binary": fake_docker(tmp_path, "A /usr/bin/x\\n")}, capsys)
    assert dirty["rc"] == 0 and dirty["drift"] is True
    assert dirty["mismatches"][0].startswith("prod: live container web-prod-blue was changed")


def test_missing_conf_dir_and_failing_docker_are_clear_failures(tmp_path, capsys):
    res = run({"app": "web", "environments": [{"name": "prod", "expected": A}]}, capsys)
    assert res["rc"] == 1 and "needs nginx_conf_dir" in res["msg"]
    envs = [{"name": "prod", "expected": A, "nginx_conf_dir": conf_dir(tmp_path)}]
    res = run({"app": "web", "environments": envs, "docker_binary": fake_docker(tmp_path, "", 1)}, capsys)
    assert res["rc"] == 1 and "Cannot connect to the Docker daemon" in res["msg"]
