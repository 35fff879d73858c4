#!/usr/bin/env python3
"""Example script for examples/rules: prints its arguments."""

import sys

print("example script rotate_logs.py:", *sys.argv[1:])
