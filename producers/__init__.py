"""Producers: processes that bring data in and publish messages (the DICOM receiver, file import).

Each producer is a small entry point over the core package ``nps``. The DICOM receiver and
``nps import`` arrive with the import issue; this package holds their process entry points.
"""
