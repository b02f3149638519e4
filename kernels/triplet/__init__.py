"""The multi-threshold (dual) batch-hard triplet loss of Mul-DML, cross-batch memory included.

One op, one folder; read it in this order:

- ``naive.py``: the reference, one slice at a time with full distance matrices (the oracle
  every backend is tested against);
- ``chunked.py``: the PyTorch backend, mined in chunks of anchors (and of memory rows), so
  that no B×B or B×Q matrix is kept; the CPU path and the GPU fallback;
- ``fused.py``: the Triton kernels and their autograd Function (needs Triton; with
  TRITON_INTERPRET=1 set before its import it runs on CPU tensors);
- ``aot.py``: the launch-faithful sm_80 / sm_90a builds of the fused kernels, no GPU needed
  (``python -m kernels.triplet.aot`` from the repository root);
- ``outputs.py``: TripletLossOutput, what every backend returns;
- ``gather.py``: the differentiable all-gather that lets the loss mine over the global batch
  under torchrun.

The public API, its input checks and the backend choice are muldml.losses
(``muldml.MultiThresholdTripletLoss``, ``muldml.multi_threshold_triplet_loss``). This file
imports nothing, so that loading the reference or the torch backend does not load Triton.
"""
