#!/bin/sh
# Health check of a broken release: the (simulated) motor controller never comes up.
echo "motor controller not responding on /dev/ttyMOTOR0" >&2
exit 1
