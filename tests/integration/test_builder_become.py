"""The immutable.infra.builder connection honours the play's become and shell settings (docs/builder-connection.md).

Builders run as root, so a become method that asks no password (su from root) switches user as over any other
connection: commands and modules run as the become_user. A become password would need a prompt answered, which
the channel cannot do: the task fails with a message that says so. ansible_shell_executable picks the shell.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import run_playbook

PLAY = """
- hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: /usr/bin/python3
  tasks:
    - ansible.builtin.user: {name: app, shell: /bin/sh, create_home: true}
    - ansible.builtin.command: id -un
      become: true
      become_method: ansible.builtin.su
      become_user: app
      register: who
    - ansible.builtin.copy: {dest: /tmp/owned-by-app, content: "hello\\n", mode: "0644"}
      become: true
      become_method: ansible.builtin.su
      become_user: app
    - ansible.builtin.shell: echo "shell=${BASH_VERSION:+bash}"
      vars:
        ansible_shell_executable: /bin/bash
      register: shell
    - ansible.builtin.copy:
        dest: /tmp/result
        content: "{{ who.stdout }} {{ shell.stdout }}\\n"
        mode: "0644"
"""

WITH_PASSWORD = """
- hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: /usr/bin/python3
  tasks:
    - ansible.builtin.command: id -un
      become: true
      become_method: ansible.builtin.su
      become_user: nobody
      vars:
        ansible_become_password: not-used-{unique}
"""


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


@pytest.fixture
def builder(base_image, unique):
    name = f"become-{unique}"
    docker("run", "-d", "--name", name, base_image, "sleep", "infinity")
    yield name
    docker("rm", "-f", name, check=False)


def test_become_without_a_password_and_the_shell_executable_are_honoured(builder, tmp_path):
    play = tmp_path / "become.yml"
    play.write_text(PLAY)
    result = run_playbook(play, None, "-i", f"{builder},", "-c", "immutable.infra.builder")
    assert result.returncode == 0, result.stdout[-3000:]
    assert docker("exec", builder, "cat", "/tmp/result").strip() == "app shell=bash"
    assert docker("exec", builder, "stat", "-c", "%U", "/tmp/owned-by-app").strip() == "app"


def test_a_become_password_fails_with_a_clear_message(builder, tmp_path, unique):
    play = tmp_path / "password.yml"
    play.write_text(WITH_PASSWORD.replace("{unique}", unique))
    result = run_playbook(play, None, "-i", f"{builder},", "-c", "immutable.infra.builder")
    assert result.returncode != 0
    assert "cannot answer a privilege escalation password prompt" in result.stdout, result.stdout[-3000:]
    assert f"not-used-{unique}" not in result.stdout + result.stderr
