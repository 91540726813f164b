"""Builds the C engine (csrc/) into accel_sim._engine with cffi; metadata is in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["csrc/build_engine.py:ffibuilder"])
