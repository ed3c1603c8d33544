"""A separate process that puts one dataset (for kill and concurrency tests).

usage: python tests/store/writer.py DATASET_ID SOURCE_DIR
The store comes from the environment (NPS_STORE, NPS_HOME / NPS_MINIO_BUCKET).
"""

import sys
from pathlib import Path

from nps.config import load_settings
from nps.store import open_store
from schemas.dataset import DatasetRecord, UploadOrigin

dataset_id, source = sys.argv[1], Path(sys.argv[2])
store = open_store(load_settings())
manifest = store.put(dataset_id, source, DatasetRecord(id=dataset_id, origin=UploadOrigin(source=str(source))))
print("committed", len(manifest.files), flush=True)
