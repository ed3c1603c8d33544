"""DICOM domain logic for import: header metadata and series classification. Pure functions.

The receiver, file importer and series assembly (issue 3) build on these; nothing here
touches the network or the store.
"""

from nps.dicom.classify import CLASSES, classify
from nps.dicom.metadata import b_values, instance_metadata

__all__ = ["CLASSES", "b_values", "classify", "instance_metadata"]
