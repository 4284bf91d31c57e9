#!/usr/bin/env python3
"""Placeholder: this command is not built yet (see the README's status section)."""
import sys

sys.exit(f"{sys.argv[0]}: not implemented yet in this version of mit_semseg; see README.md")
