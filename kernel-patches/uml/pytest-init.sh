#!/bin/sh
# PID 1 of the User-Mode Linux guest that runs tests (see pytest_in_uml.py): the host's root
# read-only through hostfs, tmpfs on /run and /tmp, devpts for Mininet's shells, then pytest.
here=$(dirname "$0")
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts
mount -t devpts -o ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /run
# The checkout may itself be under /tmp, which the tmpfs below hides: take the guest side along,
# and keep the host's /tmp reachable to put the checkout's top directory back at its own path
# (its venv's scripts name that path in their #! lines).
cp "$here/pytest_guest.py" /run/pytest_guest.py
mkdir -p /run/host-tmp
mount --bind /tmp /run/host-tmp
mount -t tmpfs tmpfs /tmp
case "$mptcplab_repo" in
  /tmp/?*)
    top=${mptcplab_repo#/tmp/}
    top=${top%%/*}
    mkdir -p "/tmp/$top"
    mount --bind "/run/host-tmp/$top" "/tmp/$top"
    ;;
esac
ip link set lo up
ulimit -n 65536
exec python3 /run/pytest_guest.py
