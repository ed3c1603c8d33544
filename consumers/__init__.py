"""Consumers: processes that take messages off RabbitMQ and act (series assembly, indexer, job worker).

Each consumer is a thin loop over pure domain functions in ``nps``. They arrive with the import
and jobs issues; this package holds their process entry points.
"""
