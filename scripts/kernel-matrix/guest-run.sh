#!/bin/bash
# PID 1 of a kernel-matrix guest after switch_root (the host's own bash, read
# over 9p). The runner copies this file into the run's writable share
# (/km-out) with job.env beside it. It makes the guest look enough like the
# host for the datapath suites (tmpfs /tmp and /run, cgroup v2 at
# /sys/fs/cgroup/unified as on the host, bpffs, loopback up), probes the
# worker once, runs the job's command with a timeout, writes its exit code to
# /km-out/rc and powers the guest off. Nothing here can reach the host: the
# root is a read-only share under a tmpfs overlay and the guest has no NIC.
set -u
OUT=/km-out
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb LANG=C.UTF-8
log() { echo "meshlane-km: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

finish() {
  echo "$1" >"$OUT/rc.tmp" && mv "$OUT/rc.tmp" "$OUT/rc"
  echo "end $(uptime_s)" >>"$OUT/times"
  sync
  log "powering off (rc $1)"
  echo o >/proc/sysrq-trigger
  sleep 30
  exit "$1" # PID 1 exits: panic=-1 reboots, and qemu's -no-reboot ends it
}

# shellcheck source=/dev/null
source "$OUT/job.env" || finish 97

# The checkout may itself live under /tmp or /run (CI clones anywhere):
# keep a handle on it before fresh tmpfs mounts hide those folders, and put
# it back at the same path after.
mkdir -p /km-cwd
mount --bind "$KM_CWD" /km-cwd || finish 96
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
if [ ! -e "$KM_CWD/package.json" ]; then
  mkdir -p "$KM_CWD" && mount --bind /km-cwd "$KM_CWD" || finish 96
fi
mkdir -p /run/netns /run/lock /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# The host (and so test/harness/cluster.ts, CGROUP2) has cgroup v2 at
# /sys/fs/cgroup/unified beside v1 controllers; the guest has only v2.
mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/unified
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified || log "cannot mount cgroup2"
mount -t bpf -o mode=0700 bpf /sys/fs/bpf || log "cannot mount bpffs"
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
ip link set lo up
hostname "km-${KM_KERNEL}" 2>/dev/null || true
ulimit -n 1048576 2>/dev/null || ulimit -n 65536
# No kmod here: log whatever the kernel tries to autoload (modules.txt lists
# what the initramfs loads), so a missing module names itself.
printf '#!/bin/sh\necho "$*" >>%s/modprobe.log\nexit 1\n' "$OUT" >/run/km-modprobe
chmod +x /run/km-modprobe
echo /run/km-modprobe >/proc/sys/kernel/modprobe

uname -r >"$OUT/uname"
echo "ready $(uptime_s)" >"$OUT/times"
log "guest ready: kernel $(uname -r), uptime $(uptime_s)s, root $(awk '$2 == "/" { print $3 }' /proc/mounts | tail -1)"

cd "$KM_CWD" || finish 96
if [ "${KM_PROBE:-1}" = 1 ]; then
  log "probing the worker (kernel features, attach)"
  timeout -k 5 "${KM_PROBE_TIMEOUT:-180}" node "$KM_PROBE_SCRIPT" >"$OUT/probe.json" 2>"$OUT/probe.log"
  log "probe exit $?: $(tail -n 1 "$OUT/probe.log" | head -c 1000)"
  echo "probed $(uptime_s)" >>"$OUT/times"
fi

for kv in "${KM_ENV[@]}"; do export "${kv?}"; done
log "running (timeout ${KM_TIMEOUT}s): ${KM_CMD[*]}"
echo "start $(uptime_s)" >>"$OUT/times"
timeout -k 10 "$KM_TIMEOUT" "${KM_CMD[@]}" </dev/null 2>&1 | tee "$OUT/cmd.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && log "command timed out after ${KM_TIMEOUT}s"
echo "done $(uptime_s)" >>"$OUT/times"
log "command exit $rc"
finish "$rc"
