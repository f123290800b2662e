#!/usr/bin/env bash
# Idempotent host set-up for a fresh Debian 12 machine: system packages the tests and the demo
# use, tracefs, and this package in editable mode. Safe to run again; fast when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# eBPF: libbpf1 (loader), clang/libbpf-dev/bpftool (probe rebuild check), tracefs;
# peers for benchmarks (zstd, bpftrace); openssl + libssl-dev for the workload fixture;
# gcc + libc6-dev also compile the optional C fold at `pip install -e .` (hatch_build.py; the
# Python headers come with this pyenv Python);
# chromium for the HTML report rendering test; iproute2/util-linux for network namespaces;
# postgresql (Debian 12: PostgreSQL 15, /usr/lib/postgresql/15/bin) for the store tests, which
# start a private cluster of their own (the packaged cluster is not used).
# deployment checks (tests/deploy): promtool from prometheus (alert rules), amtool from
# prometheus-alertmanager (routing), systemd-analyze from systemd (the unit).
# scope (tests/collector/test_collector_scope_nginx.py): nginx-light serving TLS and ab from
# apache2-utils as the client calling the same libssl functions; the test starts its own nginx.
# podman + runc run the container scope test (runc: crun refuses this VM's hybrid cgroups).
# containerd (+ ctr, its runc shim) is the second runtime: tests/collector/test_collector_containerd.py
# starts a daemon of its own (own root, state and socket); a packaged service is left as it is.
# e2fsprogs (mkfs.ext4) + util-linux (fsfreeze): a frozen ext4 loop filesystem under one map's
# chain stalls that map's loop for real (tests/collector/test_collector_agent_maps.py, liveness).
APT_PACKAGES=(
  libbpf1 libbpf-dev clang llvm bpftool bpftrace
  gcc libc6-dev libssl-dev openssl zstd
  util-linux iproute2 procps e2fsprogs
  chromium
  postgresql
  prometheus prometheus-alertmanager systemd
  nginx-light apache2-utils
  podman runc containerd
)
# `kubectl kustomize` renders the Kubernetes manifests. Debian's kubernetes-client (1.20) only
# when no kubectl is installed: a newer one from another source provides the same command.
command -v kubectl >/dev/null 2>&1 || APT_PACKAGES+=(kubernetes-client)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The prometheus packages are here for promtool and amtool only: their servers must not run
    # on a dev or CI host (the packages enable and start them where systemd runs).
    if [ -d /run/systemd/system ]; then
      for unit in prometheus prometheus-alertmanager; do
        if [[ " ${missing[*]} " == *" $unit "* ]]; then
          systemctl disable --now "$unit" >/dev/null 2>&1 || true
        fi
      done
    fi
    # Likewise nginx: its packaged server on port 80 is not wanted, the test runs its own.
    if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
      if [ -d /run/systemd/system ]; then
        systemctl disable --now nginx >/dev/null 2>&1 || true
      elif [ -x /etc/init.d/nginx ]; then
        /etc/init.d/nginx stop >/dev/null 2>&1 || true
      fi
    fi
  else
    echo "setup: missing system packages (${missing[*]}); install them as root" >&2
  fi
fi

if [ "$(id -u)" = 0 ] && [ -d /sys/kernel/tracing ] && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs nodev /sys/kernel/tracing || echo "setup: could not mount tracefs" >&2
fi

# pip takes ~20 s even when nothing changed: skip it while this tree is the installed editable
# copy and pyproject.toml, the build hook and the C sources are the ones it was installed from
# (the install compiles stella_bundle/coverage/_fold.c and stella_bundle/evidence/_record.c with
# gcc and this Python's headers; build/ is ignored by git; `rm build/setup.stamp` forces a
# reinstall).
stamp="build/setup.stamp"
wanted="$(cat pyproject.toml hatch_build.py stella_bundle/coverage/_fold.c stella_bundle/evidence/_record.c | sha256sum | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.executable)')"
installed="$(python3 - <<'PY' 2>/dev/null || true
import json
from importlib.metadata import distribution
print(json.loads(distribution("stella-bundle").read_text("direct_url.json") or "{}").get("url", ""))
PY
)"
if [ "$installed" != "file://$PWD" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  python3 -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
    | grep -v "Running pip as the 'root' user" || true
  mkdir -p build && echo "$wanted" > "$stamp"
fi

# pyenv exposes console scripts (stella, just) through shims made on rehash; `python3 -m pip`
# does not rehash by itself.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
