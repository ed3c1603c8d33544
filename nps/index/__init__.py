"""The search index: a derived view of the store in Elasticsearch, rebuildable at any time.

``documents`` turns records into index documents (pure); ``elastic`` is the adapter.
"""

from nps.index.documents import METADATA_LIMIT_BYTES, dataset_document, index_mappings
from nps.index.elastic import DatasetIndex

__all__ = ["METADATA_LIMIT_BYTES", "DatasetIndex", "dataset_document", "index_mappings"]
