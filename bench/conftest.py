"""Benchmarks run on the CPU threads the machine has (2 on the reference CI box)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
