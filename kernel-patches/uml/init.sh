#!/bin/sh
# PID 1 of the User-Mode Linux guest (see uml.py): the host's root read-only through hostfs,
# tmpfs on /run and /tmp, then the check named on the kernel command line
# (mptcplab_check=e2e|bench, passed to init as an environment variable).
here=$(dirname "$0")
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mount -t tmpfs tmpfs /run
# The checkout may itself be under /tmp, which the tmpfs below hides: take guest.py along.
cp "$here/guest.py" /run/guest.py
mount -t tmpfs tmpfs /tmp
ip link set lo up
ulimit -n 65536
exec python3 /run/guest.py "${mptcplab_check:-e2e}"
