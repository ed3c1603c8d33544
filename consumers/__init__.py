"""Consumers: processes that take messages off RabbitMQ and act (series assembly, indexer, job
worker, processor engine, analyst).

Each is a process entry point whose handler, a plain function over pure domain logic in ``nps``,
runs on ``nps.broker.Consumer`` (connection, back-off, acks, dead letters, graceful stop:
docs/broker.md).
"""
