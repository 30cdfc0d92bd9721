# shellcheck shell=sh
# immutable.infra.seal: generalise an image right before capture. PRIVATE to the seal role, fed to /bin/sh on stdin.
# Usage: sh -s -- [--dry-run] [--keep-authorized-keys] [--keep-logs] -- [extra path glob]...
# Prints one line per path it removes, truncates or empties ("would ..." with --dry-run) and nothing when the
# image is already sealed. Exits non-zero when a path could not be cleaned.
set -u
dry=0
keys=1
logs=1
rc=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --keep-authorized-keys) keys=0 ;;
        --keep-logs) logs=0 ;;
        --) shift; break ;;
        *) echo "seal.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

remove() {
    [ -e "$1" ] || [ -L "$1" ] || return 0
    if [ "$dry" -eq 1 ]; then
        echo "would remove $1"
    elif rm -rf -- "$1"; then
        echo "removed $1"
    else
        rc=1
    fi
}

truncate_file() {
    [ -f "$1" ] && [ ! -L "$1" ] && [ -s "$1" ] || return 0
    if [ "$dry" -eq 1 ]; then
        echo "would truncate $1"
    elif : >"$1"; then
        echo "truncated $1"
    else
        rc=1
    fi
}

# remove every entry of a directory (hidden ones too) except the names given after it
empty_dir() {
    dir="$1"
    shift
    [ -d "$dir" ] || return 0
    for entry in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
        name="${entry##*/}"
        keep=0
        for pattern in "$@"; do
            # shellcheck disable=SC2254
            case "$name" in $pattern) keep=1 ;; esac
        done
        [ "$keep" -eq 1 ] || remove "$entry"
    done
}

systemd_running=0
[ -d /run/systemd/system ] && systemd_running=1

# SSH host keys: every host launched from the image must get its own
for key in /etc/ssh/ssh_host_*; do remove "$key"; done

# On a systemd host with sshd, a oneshot unit regenerates the keys on first boot, before ssh.service (enabled by
# its symlinks: no daemon-reload is needed for an image about to be captured)
unit=/etc/systemd/system/immutable-infra-ssh-keygen.service
if [ "$systemd_running" -eq 1 ] && [ -x /usr/sbin/sshd ]; then
    unit_text='# Installed by immutable.infra.seal: the image ships without SSH host keys, each host generates its own.
[Unit]
Description=Generate SSH host keys missing from the sealed image
Before=ssh.service
ConditionPathExists=/usr/sbin/sshd

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service'
    if [ "$(cat "$unit" 2>/dev/null)" != "$unit_text" ]; then
        if [ "$dry" -eq 1 ]; then
            echo "would install $unit"
        elif printf '%s\n' "$unit_text" >"$unit" && chmod 0644 "$unit"; then
            echo "installed $unit"
        else
            rc=1
        fi
    fi
    for wants in multi-user.target.wants ssh.service.wants; do
        link="/etc/systemd/system/$wants/immutable-infra-ssh-keygen.service"
        [ "$(readlink "$link" 2>/dev/null)" = "$unit" ] && continue
        if [ "$dry" -eq 1 ]; then
            echo "would enable $link"
        elif mkdir -p "${link%/*}" && ln -sfn "$unit" "$link"; then
            echo "enabled $link"
        else
            rc=1
        fi
    done
fi

for home in /root /home/*; do
    [ -d "$home" ] || continue
    if [ "$keys" -eq 1 ]; then
        remove "$home/.ssh/authorized_keys"
        remove "$home/.ssh/authorized_keys2"
    fi
    for history in .bash_history .python_history .lesshst .viminfo .wget-hsts .sh_history .zsh_history; do
        remove "$home/$history"
    done
    # the builder's Ansible leftovers; deliberately installed collections and roles stay
    remove "$home/.ansible/tmp"
    remove "$home/.ansible/cp"
    remove "$home/.ansible_async"
    if [ -d "$home/.ansible" ] && [ -z "$(ls -A "$home/.ansible")" ]; then remove "$home/.ansible"; fi
done

# machine identity: an empty /etc/machine-id makes systemd generate a new one on first boot
if [ ! -f /etc/machine-id ] || [ -s /etc/machine-id ]; then
    if [ "$dry" -eq 1 ]; then
        echo "would empty /etc/machine-id"
    elif : >/etc/machine-id && chmod 0444 /etc/machine-id; then
        echo "emptied /etc/machine-id"
    else
        rc=1
    fi
fi
[ -L /var/lib/dbus/machine-id ] || remove /var/lib/dbus/machine-id
remove /var/lib/systemd/random-seed

if [ "$logs" -eq 1 ] && [ -d /var/log ]; then
    # rotated logs go, current ones are kept empty (a here-document keeps the loop in this shell, so rc counts)
    rotated="$(find /var/log -type f \( -name '*.gz' -o -name '*.xz' -o -name '*.[0-9]' -o -name '*.old' \))"
    while read -r file; do [ -z "$file" ] || remove "$file"; done <<ROTATED
$rotated
ROTATED
    current="$(find /var/log -type f -name '*.log' -size +0)"
    while read -r file; do [ -z "$file" ] || truncate_file "$file"; done <<CURRENT
$current
CURRENT
    for file in /var/log/wtmp /var/log/btmp /var/log/lastlog /var/log/faillog; do truncate_file "$file"; done
    if [ "$systemd_running" -eq 1 ]; then
        # a running journald keeps writing: rotate and vacuum its files (not reported, it writes again at once)
        journalctl --rotate --vacuum-time=1s >/dev/null 2>&1 || true
    else
        empty_dir /var/log/journal
    fi
fi

# apt: package lists and downloaded archives (apt keeps its lock files and partial directories)
empty_dir /var/lib/apt/lists lock partial
empty_dir /var/lib/apt/lists/partial
for file in /var/cache/apt/*.bin /var/cache/apt/archives/*.deb; do remove "$file"; done
empty_dir /var/cache/apt/archives/partial

# temporary files; systemd-private-* directories belong to running services and vanish at boot
empty_dir /tmp 'systemd-private-*'
empty_dir /var/tmp 'systemd-private-*'

# cloud-init: per-instance state, so the next boot runs as a first boot; seed and scripts are configuration
empty_dir /var/lib/cloud seed scripts

for pattern in "$@"; do
    case "$pattern" in
        /?*) ;;
        *) echo "seal.sh: extra path '$pattern' is not absolute: use a full path such as /opt/build" >&2; rc=2; continue ;;
    esac
    # unquoted on purpose: the extra paths are globs
    # shellcheck disable=SC2086
    for path in $pattern; do remove "$path"; done
done
exit "$rc"
