#!/usr/bin/env bash
# Placeholder: not implemented yet (see the README's status section).
echo "download_ADE20K.sh: not implemented yet in this version of mit_semseg; see README.md" >&2
exit 2
