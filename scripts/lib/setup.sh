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

ensure_all() {
  ensure_system
  ensure_kernel_matrix
  ensure_node_modules
  ensure_bpffs
  npm run --silent build
}
