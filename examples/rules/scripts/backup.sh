#!/bin/sh
echo "example script backup.sh: $*"
