"""Shared test set-up.

Without CUDA the Triton kernels run on CPU tensors through Triton's interpreter, which
must be switched on before the module defining the kernels is imported.
"""
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import settings  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))  # for the shared checks in triplet_checks.py

# Derandomised so that CI runs are reproducible; HYPOTHESIS_PROFILE=explore searches anew.
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
