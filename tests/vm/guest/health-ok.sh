#!/bin/sh
# Health check of a good release: the robot's state and boot partitions are mounted.
grep -q ' /data ' /proc/mounts || { echo "data partition not mounted" >&2; exit 1; }
grep -q ' /boot/efi ' /proc/mounts || { echo "ESP not mounted" >&2; exit 1; }
exit 0
