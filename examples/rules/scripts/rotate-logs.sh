#!/bin/sh
# Example script for examples/rules: it runs in Herald's sandbox (busybox sh, no network, read-only root).
echo "example rotate-logs.sh: $*"
