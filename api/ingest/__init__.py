"""Dataset intake: streamed uploads, validation and the normalized stored form."""

from api.ingest.columns import UploadOptions
from api.ingest.dataset import IngestResult, detect_format, ingest_dataset
from api.ingest.limits import IngestLimits
from api.ingest.upload import ReceivedUpload, receive_upload

__all__ = [
    "IngestLimits",
    "IngestResult",
    "ReceivedUpload",
    "UploadOptions",
    "detect_format",
    "ingest_dataset",
    "receive_upload",
]
