#!/usr/bin/env bash
# Install what holdscan needs on a fresh Debian/Ubuntu machine: Postfix, clamd, Redis and
# redis-sentinel (a test fails the broker over between Redis servers),
# SpamAssassin's spamd and rspamd (the spam scanner's tests start both), strace (the
# power-loss test traces the dispatcher's file-system calls), zip (an archive test),
# docker.io, docker-compose and debootstrap (tests/cluster/ builds the images from Debian's
# archive and brings the compose stack up), chromium and chromium-driver (the web's tests and
# the cluster's look at pages in a headless browser) from the distribution (when run as root
# or with sudo), and holdscan with its Python packages in a venv at .venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for pair in postconf:postfix clamd:clamav-daemon redis-server:redis-server smtp-sink:postfix \
        redis-sentinel:redis-sentinel \
        spamd:spamd rspamd:rspamd strace:strace zip:zip docker-compose:docker-compose \
        dockerd:docker.io debootstrap:debootstrap chromium:chromium chromedriver:chromium-driver; do
    cmd=${pair%%:*}; pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need_pkgs+=("$pkg")
done
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)

if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "holdscan: need the Debian packages ${need_pkgs[*]}; run this as root or install sudo" >&2
        exit 1
    fi
    echo "holdscan: installing ${need_pkgs[*]} with apt-get"
    # Postfix asks how to configure itself; holdscan's tests and demo bring their own config.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need_pkgs[@]}" >/dev/null
fi
# A test checks that every package the Dockerfile installs exists in the archive: that
# needs apt's package lists, which a machine that installed nothing here may lack.
if [ "$(id -u)" -eq 0 ] && ! apt-cache policy postfix 2>/dev/null | grep -q "Candidate: [0-9]"; then
    env DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi

# Debian's python3 (not a per-user build under /root): the dispatcher drops to Postfix's
# mail_owner, which must be able to run the venv's interpreter.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[test,demo]"
