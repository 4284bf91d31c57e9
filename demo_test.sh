#!/usr/bin/env bash
# Placeholder: not implemented yet (see the README's status section).
echo "demo_test.sh: not implemented yet in this version of mit_semseg; see README.md" >&2
exit 2
