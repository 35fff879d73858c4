#!/bin/sh
echo "example script restart-db.sh: $*"
