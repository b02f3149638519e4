"""Package metadata for muldml and its `muldml` console script."""
import re

from setuptools import find_packages, setup

EXPORT = ["onnx==1.23.2", "onnxscript==0.7.2", "onnxruntime==1.31.1"]

setup(
    name="muldml",
    version=re.search(r'__version__ = "([^"]+)"', open("muldml/__init__.py", encoding="utf-8").read())[1],
    description=(
        "Multi-threshold deep metric learning for facial expression recognition, "
        "with fused Triton kernels for the multi-threshold (dual) triplet loss."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The repository's top-level kernels/ folder (with its subpackages, one per op) installs as
    # muldml.kernels: a top-level `kernels` would collide with another package of that name.
    packages=find_packages(include=["muldml", "muldml.*"])
    + ["muldml.kernels", *(f"muldml.kernels.{name}" for name in find_packages("kernels"))],
    package_dir={"muldml.kernels": "kernels"},
    install_requires=[
        "numpy>=1.24",
        "pillow>=9.0",
        "tqdm>=4.60",
        "requests>=2.0",
        "matplotlib>=3.6",
        "pyyaml>=6.0",
        "torch>=2.4,<2.15",
        "torchvision>=0.19,<0.30",
        "triton>=3.0",
        # The circle preset's loss (Table V baseline) comes from pytorch-metric-learning.
        "pytorch-metric-learning>=2.9,<3",
        # muldml predict VIDEO: decoding and encoding by FFmpeg through PyAV (tested with 18.1.0,
        # the version scripts/setup.sh installs).
        "av>=14,<19",
        # Reports: per-class metrics and macro-F1 (scikit-learn), paired tests (scipy).
        "scikit-learn>=1.3,<2",
        "scipy>=1.10,<2",
    ],
    extras_require={
        # muldml export --format onnx: torch's ONNX exporter needs onnx and onnxscript;
        # onnxruntime runs the exported file (and checks it in the tests).
        "export": EXPORT,
        # muldml train also logs its per-epoch numbers to RUN/tensorboard/ when TensorBoard is installed.
        "tensorboard": ["tensorboard>=2.14"],
        "dev": [
            "pytest==9.2.0",
            "pytest-benchmark==5.3.1",
            "hypothesis==6.170.17",
            "pytorch-metric-learning==2.9.0",  # pinned for the tests and benchmarks
            "scikit-image==0.26.0",
            "tensorboard==2.21.0",  # the tensorboard extra, pinned for its test
            "scikit-learn==1.9.1",  # pinned for the tests (also a dependency above)
            "scipy==1.17.1",
            *EXPORT,
        ],
    },
    entry_points={"console_scripts": ["muldml=muldml.cli:main"]},
)
