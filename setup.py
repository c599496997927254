# Kept for tools that still look for setup.py; the project is described in pyproject.toml.
from setuptools import setup

setup()
