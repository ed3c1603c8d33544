"""DICOM import into series datasets: the shared ingest step, the quarantine, series assembly.

Producers (``producers.receiver``, ``producers.importer``) call ``Ingestor.ingest`` per file;
the assembler consumer (``consumers.assembler``) turns the announced instances into committed
series datasets with ``nps.ingest.assembly``.
"""

from nps.ingest.ingestor import Ingestor, Outcome
from nps.ingest.quarantine import Quarantine, Quarantined

__all__ = ["Ingestor", "Outcome", "Quarantine", "Quarantined"]
