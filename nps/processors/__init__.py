"""Processors: declarative, automatic processing of new data (see schemas/processor.py)."""

from nps.processors.load import Loaded, ProcessorError, load_dir, load_file

__all__ = ["Loaded", "ProcessorError", "load_dir", "load_file"]
