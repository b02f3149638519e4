"""The reader tests share the dataset layouts of source_layouts.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
