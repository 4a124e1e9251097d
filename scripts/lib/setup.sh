# Installs what meshlane needs on a Debian 12 machine, only when missing.
# Sourced by scripts/demo and scripts/test; safe to run again.

APT_PACKAGES=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev make gcc iproute2 iptables util-linux nats-server procps)

need_apt() {
  local cmd
  for cmd in clang llc bpftool make cc ip iptables ip6tables setpriv nats-server; do
    command -v "$cmd" >/dev/null 2>&1 || return 0
  done
  [ -f /usr/include/bpf/bpf_helpers.h ] || return 0
  ldconfig -p | grep -q 'libbpf.so.1 ' || return 0
  return 1
}

ensure_system() {
  if need_apt; then
    if [ "$(id -u)" != 0 ]; then
      echo "meshlane: missing system packages and not root; install: ${APT_PACKAGES[*]}" >&2
      exit 1
    fi
    echo "meshlane: installing ${APT_PACKAGES[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  fi
  if ! command -v node >/dev/null 2>&1; then
    echo "meshlane: Node.js 20 is required" >&2
    exit 1
  fi
}

ensure_node_modules() {
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "meshlane: npm ci" >&2
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

ensure_bpffs() {
  if ! awk '$2 == "/sys/fs/bpf" && $3 == "bpf" { found = 1 } END { exit !found }' /proc/mounts; then
    mount -t bpf bpf /sys/fs/bpf
  fi
}

# Kernel matrix (test/kernels/, scripts/kernel-matrix/): qemu-system-x86 to
# boot Debian's other kernels as guests. The kernels themselves are never
# installed: run.mjs downloads their .deb into build/kernel-matrix/cache and
# unpacks it there, so /boot and the bootloader are not touched.
ensure_kernel_matrix() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "meshlane: qemu-system-x86_64 missing and not root (the kernel matrix needs it); install: qemu-system-x86" >&2
    return 0
  fi
  echo "meshlane: installing qemu-system-x86 (kernel matrix)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
}

# meshlane, meshlane-worker and meshlane-controlplane on PATH, as the README
# writes them: links in /usr/local/bin to this checkout's bin/ wrappers
# (which exec node on the built dist). Root only; idempotent; a name in
# /usr/local/bin that is not a link to a meshlane bin wrapper is left alone.
ensure_bins() {
  local name src dest cur
  for name in meshlane meshlane-worker meshlane-controlplane; do
    src=$PWD/bin/$name
    dest=/usr/local/bin/$name
    [ -x "$src" ] || continue
    if [ -L "$dest" ]; then
      cur=$(readlink "$dest")
      [ "$cur" = "$src" ] && continue
      # Ours: a link to a meshlane bin wrapper (another checkout's too), or
      # to one that is gone.
      if [ -e "$dest" ] && ! grep -qs '^# meshlane bin wrapper' "$dest"; then
        echo "meshlane: $dest links to $cur, not a meshlane bin wrapper; left alone (use $src)" >&2
        continue
      fi
    elif [ -e "$dest" ]; then
      echo "meshlane: $dest exists and is not ours; left alone (use $src)" >&2
      continue
    fi
    if [ "$(id -u)" != 0 ] || ! ln -sfn "$src" "$dest" 2>/dev/null; then
      echo "meshlane: cannot link $dest; add $PWD/bin to PATH" >&2
      return 0
    fi
  done
}

# Compatibility suite (test/compat/): real third-party apps in the test
# pods (nginx as server and reverse proxy, HAProxy as a sidecar, curl,
# Debian's Python, OpenJDK and Go). Installed only when one is missing.
ensure_compat() {
  local cmd missing=0 fresh=()
  local COMPAT_PACKAGES=(nginx-light haproxy curl golang-go openjdk-17-jdk-headless python3)
  for cmd in /usr/sbin/nginx /usr/sbin/haproxy curl go java javac /usr/bin/python3; do
    command -v "$cmd" >/dev/null 2>&1 || missing=1
  done
  [ "$missing" = 1 ] || return 0
  [ -x /usr/sbin/nginx ] || fresh+=(nginx)
  [ -x /usr/sbin/haproxy ] || fresh+=(haproxy)
  if [ "$(id -u)" != 0 ]; then
    echo "meshlane: compat suite apps missing and not root; install: ${COMPAT_PACKAGES[*]}" >&2
    return 0
  fi
  echo "meshlane: installing ${COMPAT_PACKAGES[*]} (compat suite)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${COMPAT_PACKAGES[@]}" >/dev/null
  # Debian starts nginx and haproxy on install; the suite runs its own
  # instances inside the test pods, so the services this call installed
  # (never ones that were there before) are stopped and disabled.
  if [ ${#fresh[@]} -gt 0 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "${fresh[@]}" >/dev/null 2>&1 || true
  fi
}

# Chart reference renderer (test/deploy/chart-reference.test.ts): Debian's
# Go and yaml.v2 sources, built offline (GOPATH mode, no module proxy).
ensure_helmref() {
  command -v go >/dev/null 2>&1 && [ -f /usr/share/gocode/src/gopkg.in/yaml.v2/yaml.go ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "meshlane: Go or yaml.v2 sources missing and not root (the chart reference test needs them); install: golang-go golang-gopkg-yaml.v2-dev" >&2
    return 0
  fi
  echo "meshlane: installing golang-go golang-gopkg-yaml.v2-dev (chart reference test)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends golang-go golang-gopkg-yaml.v2-dev >/dev/null
}

ensure_all() {
  ensure_system
  ensure_kernel_matrix
  ensure_compat
  ensure_helmref
  ensure_node_modules
  ensure_bpffs
  npm run --silent build
  ensure_bins
}
