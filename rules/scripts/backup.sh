#!/bin/sh
# Example backup job. It runs inside Herald's sandbox: no network, read-only root, /tmp as a small noexec tmpfs,
# this folder mounted read-only at /scripts. Replace the body with your real backup (and mount what it needs).
set -eu
mode="${1:-now}"
echo "backup ($mode) started at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
mkdir -p /tmp/backup
for f in /scripts/*; do
    cat "$f" > "/tmp/backup/$(basename "$f")"
    echo "copied $(basename "$f")"
done
echo "backup finished: $(ls /tmp/backup | wc -l) files"
