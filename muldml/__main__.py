"""`python -m muldml …`, the form torchrun launches: torchrun --nproc-per-node K -m muldml train …"""
import sys

from muldml.cli import main

sys.exit(main())
