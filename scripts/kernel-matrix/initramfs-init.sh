#!/bin/sh
# /init of the kernel matrix's initramfs (busybox sh, PID 1). Loads the
# modules listed in /modules.list, mounts the host's root read-only over 9p
# (tag hostroot) under an overlay whose upper layer is a tmpfs, mounts the
# per-run writable share (tag kmout) at /km-out, and hands PID 1 over to
# /km-out/guest-run.sh on the new root. Anything that fails here ends PID 1,
# so the kernel panics, and with panic=-1 and qemu's -no-reboot the guest is
# gone at once instead of hanging until the host's boot timeout.
export PATH=/bin
log() { echo "meshlane-km: $*"; }
die() {
  log "FATAL: $*"
  exit 1
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log "initramfs up, kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"

while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "/lib/modules/$mod" || log "insmod $mod failed: $(busybox dmesg | busybox tail -n 2)"
done </modules.list

# Host root as the overlay's lower layer. msize: the largest a virtio 9p
# channel takes; cache=loose: the share is read-only for the guest's life.
NINEP="trans=virtio,version=9p2000.L,msize=512000"
mkdir -p /lower /rw /newroot
mount -t 9p -o "$NINEP,ro,cache=loose" hostroot /lower || die "cannot mount the host root over 9p"
mount -t tmpfs -o mode=0755,size=75% rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot ||
  die "cannot mount the overlay (9p lower, tmpfs upper)"
log "root: host / over 9p (read-only) + overlay on tmpfs"
mkdir -p /newroot/km-out
mount -t 9p -o "$NINEP,cache=none" kmout /newroot/km-out || die "cannot mount the result share (kmout)"
[ -x /newroot/km-out/guest-run.sh ] || die "no /km-out/guest-run.sh"

for m in dev proc sys; do mount --move "/$m" "/newroot/$m" || die "cannot move /$m"; done
log "switching root, uptime $(cut -d' ' -f1 /newroot/proc/uptime)s"
exec switch_root /newroot /bin/bash /km-out/guest-run.sh
die "switch_root failed"
