"""Installs kernels/ as the subpackage fastrnn.kernels; everything else lives in pyproject.toml."""

from setuptools import setup

setup(
    packages=[
        "fastrnn",
        "fastrnn.bench",
        "fastrnn.kernels",
        "fastrnn.kernels.numba",
        "fastrnn.kernels.triton",
    ],
    package_dir={"fastrnn": "fastrnn", "fastrnn.kernels": "kernels"},
)
