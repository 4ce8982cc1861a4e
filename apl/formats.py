"""The file formats shared by ingest (the API) and training (the worker), torch-free.

The stored dataset layout is the contract between the process that validates an
upload and the one that trains on it; the image formats are what both a dataset and
a predict request may hold. Each is written down once, here.
"""

from __future__ import annotations

#: `<dataset_dir>/samples.jsonl`: one `{"text"|"image", "labels"}` object a line, plus
#: `"unknown": [...]` on a sample that leaves labels unannotated (absent when none is).
SAMPLES_FILE = "samples.jsonl"
#: The key of a stored sample's unknown label names (partial annotation; optional).
UNKNOWN_KEY = "unknown"
#: `<dataset_dir>/labels.json`: the sorted label names.
LABELS_FILE = "labels.json"
#: `<dataset_dir>/images/`: the image files a sample's `"image": "images/<path>"` points into.
IMAGES_DIR = "images"

#: Pillow format names of the images a dataset ZIP may hold (the upload contract).
DATASET_IMAGE_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP"})
#: File name suffixes of those images inside a ZIP.
DATASET_IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp"})
#: A predict request may also send GIF and BMP (Pillow decodes them safely; they are common).
PREDICT_IMAGE_FORMATS: frozenset[str] = DATASET_IMAGE_FORMATS | {"GIF", "BMP"}
