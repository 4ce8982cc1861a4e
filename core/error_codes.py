"""Every machine code aplserve answers with, its HTTP status(es) and what a person should do about it.

One registry for three readers: the OpenAPI page (`api.schemas.problem_responses`
documents each route's codes with an example), `docs/errors.md` (rendered from here:
`python -m core.error_codes` rewrites it) and the tests, which scan the source for
every code an `AppError` (or a job failure) can carry and fail when one is missing
here, so the list cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ErrorCode:
    code: str
    statuses: tuple[int, ...]
    area: str
    advice: str


@dataclass(frozen=True)
class JobErrorCode:
    """A code in a failed job's `error.code` (no HTTP status: the job row says it)."""

    code: str
    advice: str


ANY = "Any route"
UPLOAD = "Uploading a dataset (the request)"
CONTENT = "Uploading a dataset (the file's content)"
JOBS = "Jobs"
SWEEPS = "Sweeps (the loss tournament)"
MODELS = "Models and predictions"
SERVICE = "The service"

_HTTP: tuple[ErrorCode, ...] = (
    ErrorCode(
        "validation_error",
        (422,),
        ANY,
        "A body field, query parameter or header is not what the "
        "route takes. `errors` lists each problem with its location (`loc`); fix those and send again.",
    ),
    ErrorCode(
        "unauthorized",
        (401,),
        ANY,
        "Send `Authorization: Bearer <key>` with a live key; create one "
        "with `aplserve keys create --name NAME`. A revoked key stops working within "
        "APLSERVE_AUTH_CACHE_SECONDS.",
    ),
    ErrorCode(
        "not_found",
        (404,),
        ANY,
        "No such dataset, job or model for your key (another owner's read as "
        "missing), or no such route. Check the id, e.g. with `aplserve jobs list`.",
    ),
    ErrorCode(
        "method_not_allowed", (405,), ANY, "The path exists, but not with this HTTP method; see /docs."
    ),
    ErrorCode("invalid_cursor", (400,), ANY, "Pass `cursor` back exactly as a list's `next_cursor` gave it."),
    ErrorCode(
        "internal",
        (500,),
        ANY,
        "A fault on the server, logged there with its traceback. Retry; if it "
        "stays, tell the operators the time of the request.",
    ),
    ErrorCode(
        "database_unavailable",
        (503,),
        ANY,
        "The database did not answer; retry shortly. Operators: "
        "check APLSERVE_DATABASE_URL and the database server.",
    ),
    ErrorCode(
        "database_busy",
        (503,),
        SERVICE,
        "Every database connection was busy for APLSERVE_DB_POOL_TIMEOUT_SECONDS; retry "
        "shortly. Operators: raise APLSERVE_DB_POOL_SIZE / APLSERVE_DB_MAX_OVERFLOW or add API processes.",
    ),
    ErrorCode(
        "storage_unavailable",
        (503,),
        SERVICE,
        "The object storage (APLSERVE_STORAGE_URL=s3://...) did not answer in time; nothing was "
        "stored. Retry shortly; operators: check the S3 server and /readyz.",
    ),
    ErrorCode(
        "storage_full",
        (507,),
        SERVICE,
        "The server's disk or its object-storage bucket is full (or over its quota); nothing was "
        "kept. Operators: free space in APLSERVE_DATA_DIR or the bucket.",
    ),
    ErrorCode(
        "invalid_characters",
        (422,),
        ANY,
        "A path, query value, id or JSON string holds a NUL or another character the service "
        "cannot store; remove it.",
    ),
    ErrorCode(
        "body_too_large",
        (413,),
        ANY,
        "A JSON body is over APLSERVE_MAX_JSON_BODY_BYTES (1 MiB by default); job specs are small, so "
        "check what is being sent.",
    ),
    ErrorCode(
        "request_timeout",
        (408,),
        ANY,
        "The request head or body did not arrive in time (APLSERVE_HEADER_TIMEOUT_SECONDS, "
        "APLSERVE_BODY_TIMEOUT_SECONDS); send it again over a steadier connection.",
    ),
    ErrorCode(
        "headers_too_large",
        (431,),
        ANY,
        "The request headers are over APLSERVE_MAX_HEADER_BYTES (64 KiB in all); send fewer "
        "or shorter headers.",
    ),
    ErrorCode(
        "quota_exceeded",
        (429,),
        ANY,
        "Your owner is at a quota (queued + running jobs, or dataset storage); `limit` and `used` in "
        "the body say which. Wait for jobs to end, or delete datasets, then retry.",
    ),
    ErrorCode(
        "rate_limited",
        (429,),
        ANY,
        "Too many predict or write requests in a short time for your owner; retry after the "
        "`Retry-After` seconds.",
    ),
    ErrorCode(
        "not_ready",
        (503,),
        SERVICE,
        "/readyz: the database or the broker is unreachable; the body says "
        "which. Operators: check APLSERVE_DATABASE_URL / APLSERVE_BROKER_URL.",
    ),
    ErrorCode(
        "unsupported_media_type",
        (415,),
        UPLOAD,
        "Send the upload as multipart/form-data with the file "
        "in the `file` field (predict: application/json, or multipart with image `files`).",
    ),
    ErrorCode(
        "upload_too_large",
        (413,),
        UPLOAD,
        "The upload is over APLSERVE_MAX_UPLOAD_BYTES; split the "
        "dataset or ask the operators to raise the limit.",
    ),
    ErrorCode(
        "invalid_content_length",
        (400,),
        UPLOAD,
        "The Content-Length header is not a number; let your HTTP client set it.",
    ),
    ErrorCode(
        "invalid_multipart",
        (400,),
        UPLOAD,
        "The multipart/form-data body is malformed or cut short; "
        "let your HTTP client build it (curl -F, requests' files=).",
    ),
    ErrorCode(
        "too_many_fields",
        (400,),
        UPLOAD,
        "The form has more parts than an upload uses; send `file`, `name` and the reading options only.",
    ),
    ErrorCode("too_many_files", (400,), UPLOAD, "Upload one file per request, in the `file` field."),
    ErrorCode(
        "unexpected_file", (400,), UPLOAD, "Only the `file` field may hold a file; send others as text."
    ),
    ErrorCode(
        "field_too_large",
        (400,),
        UPLOAD,
        "A text field of the form is too long; keep names and options short.",
    ),
    ErrorCode("invalid_field", (400,), UPLOAD, "A text field of the form is not valid UTF-8."),
    ErrorCode("missing_file", (422,), UPLOAD, "The form has no `file` part: `curl -F file=@data.csv ...`."),
    ErrorCode(
        "invalid_upload_option",
        (422,),
        UPLOAD,
        "A reading option is malformed or does not apply to "
        "this kind of file (`filename_column` is for ZIPs, `text_column` for text files).",
    ),
    ErrorCode(
        "unsupported_format",
        (415,),
        UPLOAD,
        "Upload a .csv or .jsonl text dataset, or a .zip of "
        "images with labels.csv; the file name's extension decides.",
    ),
    ErrorCode(
        "suspicious_label_separator",
        (422,),
        CONTENT,
        "A labels cell holds ',' or ';' while labels are "
        "read with the default '|'. Send `label_separator` with the separator your file uses (or '|' "
        "when the comma belongs to a label name).",
    ),
    ErrorCode(
        "invalid_csv",
        (422,),
        CONTENT,
        "A row is not valid CSV or has another number of fields than "
        "the header; the detail names the line. Quote fields that contain commas.",
    ),
    ErrorCode(
        "invalid_csv_header",
        (422,),
        CONTENT,
        "The header lacks a required column (or names it twice). "
        "Rename the column, or name yours with `text_column`, `labels_column` or `filename_column`.",
    ),
    ErrorCode(
        "invalid_encoding", (422,), CONTENT, "Save the file as UTF-8; the detail names the line and byte."
    ),
    ErrorCode("line_too_long", (422,), CONTENT, "A line is over 1 MiB; shorten that sample."),
    ErrorCode(
        "invalid_json",
        (422,),
        CONTENT,
        "A JSONL line is not an object with a text string and a labels "
        "list (or the keys named by `text_column` / `labels_column`).",
    ),
    ErrorCode("empty_text", (422,), CONTENT, "A sample's text is empty; remove the line or fill it in."),
    ErrorCode(
        "text_too_long",
        (422,),
        CONTENT,
        "A text is longer than allowed (dataset: 20000 characters; "
        "predict: APLSERVE_PREDICT_MAX_TEXT_CHARS).",
    ),
    ErrorCode(
        "label_known_and_unknown",
        (422,),
        CONTENT,
        "A sample names a label both in its labels and in its `unknown` column (or key); the detail "
        "names the line or labels.csv line. A label is either given or unknown on one sample.",
    ),
    ErrorCode(
        "invalid_label",
        (422,),
        CONTENT,
        "A label name is empty (a doubled or trailing separator) or over 100 characters.",
    ),
    ErrorCode(
        "too_many_labels",
        (422,),
        CONTENT,
        "Too many labels on one sample (1000) or in the dataset (10000); check the separator.",
    ),
    ErrorCode(
        "too_few_samples",
        (422,),
        CONTENT,
        "A dataset needs at least 10 samples to split into training and validation.",
    ),
    ErrorCode("too_few_labels", (422,), CONTENT, "Multi-label training needs at least 2 distinct labels."),
    ErrorCode(
        "invalid_zip",
        (422,),
        CONTENT,
        "The ZIP is unreadable, encrypted, corrupt or uses an "
        "unsupported compression; zip it again (deflate, no password).",
    ),
    ErrorCode("too_many_members", (422,), CONTENT, "The ZIP has more than 100000 members; split it."),
    ErrorCode(
        "unsafe_zip_member",
        (422,),
        CONTENT,
        "A member name could escape the dataset (absolute, '..', "
        "a link); zip the folder's contents with relative names.",
    ),
    ErrorCode(
        "zip_too_large",
        (422,),
        CONTENT,
        "The ZIP expands past 4 GiB or a member compresses "
        "suspiciously well (a ZIP bomb); split or re-zip it.",
    ),
    ErrorCode(
        "missing_labels_file",
        (422,),
        CONTENT,
        "Put labels.csv (columns filename,labels) at the ZIP's "
        "root: zip the folder's contents, not the folder.",
    ),
    ErrorCode(
        "duplicate_entry", (422,), CONTENT, "labels.csv lists an image twice; merge its labels into one row."
    ),
    ErrorCode(
        "missing_image",
        (422,),
        CONTENT,
        "labels.csv lists a file the ZIP does not hold; check the path (relative to the ZIP's root).",
    ),
    ErrorCode(
        "unlisted_file",
        (422,),
        CONTENT,
        "The ZIP holds a file labels.csv does not list; list it (with empty labels for none) or remove it.",
    ),
    ErrorCode(
        "invalid_image",
        (422,),
        CONTENT,
        "A file is not a readable PNG, JPEG or WebP image (dataset member or predict input).",
    ),
    ErrorCode(
        "image_too_large",
        (413, 422),
        CONTENT,
        "An image has too many pixels (dataset: 40 megapixels, "
        "422) or too many bytes (predict: APLSERVE_PREDICT_MAX_IMAGE_BYTES, 413); scale it down.",
    ),
    ErrorCode(
        "devices_unavailable",
        (422,),
        JOBS,
        "`hyperparameters.devices` asks for more devices than any live worker has; the message names the "
        "workers and their devices (`GET /v1/workers`). Ask for fewer, or start a worker with enough "
        "(`APLSERVE_WORKER_DEVICES`, docs/gpu.md).",
    ),
    ErrorCode(
        "dataset_in_use",
        (409,),
        JOBS,
        "A queued or running job uses the dataset; cancel the job or wait for it, then delete.",
    ),
    ErrorCode(
        "dataset_not_found",
        (404,),
        JOBS,
        "The job's `dataset_id` is not one of your datasets; upload first and use the id it returns.",
    ),
    ErrorCode(
        "unknown_base_model",
        (422,),
        JOBS,
        "`base_model` is not a built-in name (GET /v1/base-models), "
        "an architecture of the installed timm (`timm:<arch>`), a model directory on the server with "
        "config.json, or (with APLSERVE_ALLOW_MODEL_DOWNLOAD) a hub id (`hf:<...>`).",
    ),
    ErrorCode(
        "label_unknown_in_training",
        (422,),
        JOBS,
        "The dataset marks a label unknown on every sample of the job's training split, so nothing "
        "could be learned for it; the detail names the label. Annotate it on more samples.",
    ),
    ErrorCode(
        "modality_mismatch",
        (422,),
        JOBS,
        "The base model is for texts and the dataset holds images, "
        "or the other way round; pick a base model of the dataset's modality.",
    ),
    ErrorCode(
        "webhook_url_refused",
        (422,),
        JOBS,
        "Webhooks go to public addresses only; use a public URL, "
        "or set APLSERVE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES on a private deployment.",
    ),
    ErrorCode("invalid_idempotency_key", (422,), JOBS, "Idempotency-Key must be 1 to 200 characters."),
    ErrorCode(
        "idempotency_key_reused",
        (409,),
        JOBS,
        "This Idempotency-Key already created a job with another spec; use a new key for a new job.",
    ),
    ErrorCode(
        "broker_unavailable",
        (503,),
        JOBS,
        "The job queue did not take the job (nothing was kept); retry, with the same Idempotency-Key.",
    ),
    ErrorCode(
        "dataset_too_small",
        (422,),
        JOBS,
        "After the test split is held out too few samples are left to train and validate on; "
        "lower test_fraction or upload more samples.",
    ),
    ErrorCode(
        "test_dataset_not_held_out",
        (422,),
        JOBS,
        "test_dataset_id names the training dataset itself; upload the test samples as a dataset of "
        "their own.",
    ),
    ErrorCode(
        "test_labels_mismatch",
        (422,),
        JOBS,
        "The test dataset must have exactly the training dataset's labels; the detail lists the "
        "labels found in only one of them.",
    ),
    ErrorCode(
        "empty_candidates", (422,), SWEEPS, "Give at least one candidate loss, or leave `candidates` out."
    ),
    ErrorCode(
        "duplicate_candidate",
        (422,),
        SWEEPS,
        "Two candidates are the same loss with the same parameters; remove one.",
    ),
    ErrorCode("empty_seeds", (422,), SWEEPS, "Give at least one seed, or leave `seeds` out for [0, 1, 2]."),
    ErrorCode("duplicate_seed", (422,), SWEEPS, "Each seed may appear once in `seeds`."),
    ErrorCode("invalid_seed", (422,), SWEEPS, "Seeds are integers from 0 to 2**32 - 1."),
    ErrorCode(
        "seed_in_hyperparameters",
        (422,),
        SWEEPS,
        "A sweep sets each child's seed from `seeds`; remove `hyperparameters.seed`.",
    ),
    ErrorCode(
        "too_many_children",
        (422,),
        SWEEPS,
        "candidates x seeds is over 64 jobs; use fewer candidates or seeds.",
    ),
    ErrorCode(
        "too_many_trials",
        (422,),
        SWEEPS,
        "candidates x search.trials is over 256 trials; use fewer candidates or trials.",
    ),
    ErrorCode(
        "empty_search_space",
        (422,),
        SWEEPS,
        "The base model has no default search space: give `search.space`.",
    ),
    ErrorCode(
        "invalid_search_space",
        (422,),
        SWEEPS,
        "A value of the space (a range end or a choice) is outside what its field accepts; narrow it.",
    ),
    ErrorCode(
        "missing_test_split",
        (422,),
        SWEEPS,
        "A sweep is scored on a test split: give test_fraction (0.2 by default) or test_dataset_id.",
    ),
    ErrorCode(
        "conflicting_test_split",
        (422,),
        SWEEPS,
        "Give test_fraction or test_dataset_id, not both.",
    ),
    ErrorCode("sweep_finished", (409,), SWEEPS, "The sweep has already ended; there is nothing to cancel."),
    ErrorCode("job_finished", (409,), JOBS, "The job has already ended; there is nothing to cancel."),
    ErrorCode("job_not_cancellable", (409,), JOBS, "The job is in a state that cannot be cancelled."),
    ErrorCode(
        "model_unavailable",
        (503,),
        MODELS,
        "The model's files are missing or cannot be loaded on this "
        "server; operators: check the data dir (APLSERVE_DATA_DIR) and the server log.",
    ),
    ErrorCode(
        "onnx_export_failed",
        (422,),
        MODELS,
        "This model cannot be exported to ONNX; download format=tar and load it with apl.inference.",
    ),
    ErrorCode(
        "request_too_large",
        (413,),
        MODELS,
        "The predict body is over APLSERVE_PREDICT_MAX_BODY_BYTES; send fewer or smaller inputs per request.",
    ),
    ErrorCode("empty_inputs", (422,), MODELS, "Send at least one input."),
    ErrorCode(
        "too_many_inputs", (422,), MODELS, "Send at most APLSERVE_PREDICT_MAX_INPUTS inputs per request."
    ),
    ErrorCode(
        "image_too_many_pixels",
        (422,),
        MODELS,
        "A predict image is over APLSERVE_PREDICT_MAX_IMAGE_PIXELS pixels; scale it down.",
    ),
    ErrorCode(
        "evaluation_unavailable",
        (404,),
        MODELS,
        "The model was published before evaluations were stored; train it again to get one.",
    ),
    ErrorCode(
        "label_issues_unavailable",
        (404,),
        MODELS,
        "The model has no suspect-label ranking: it was published before rankings were stored, or its "
        "validation split could not be ranked (the worker's log says why). Train it again to get one.",
    ),
    ErrorCode(
        "wrong_modality",
        (422,),
        MODELS,
        "Texts go to text models and images to image models; check the model id.",
    ),
    ErrorCode(
        "unknown_label",
        (422,),
        MODELS,
        "A per-label `threshold` names a label the model does not have; see the model's `labels`.",
    ),
)

_JOB: tuple[JobErrorCode, ...] = (
    JobErrorCode(
        "out_of_memory", "Lower batch_size, image_size or max_length, or pick a smaller base model."
    ),
    JobErrorCode(
        "training_diverged", "The loss became NaN or infinite: lower learning_rate or use another loss."
    ),
    JobErrorCode(
        "dataset_unreadable",
        "The dataset's files are gone or damaged (or it was deleted); upload it again and start a new job.",
    ),
    JobErrorCode(
        "model_unavailable",
        "The base model could not be loaded on the worker (weights package "
        "missing, no network for a hub id); see the message.",
    ),
    JobErrorCode(
        "devices_unavailable",
        "The job reached a worker with fewer devices than `hyperparameters.devices` (its workers changed "
        "after it was queued); start it again once a worker with enough devices runs.",
    ),
    JobErrorCode(
        "device_unavailable",
        "The worker's training device (GPU) is not available; operators: check the worker's CUDA setup.",
    ),
    JobErrorCode(
        "checkpoint_invalid",
        "A checkpoint could not be used; the job starts afresh when it can, else start a new job.",
    ),
    JobErrorCode(
        "invalid_artifact", "The trained model could not be written as an artifact; see the message."
    ),
    JobErrorCode(
        "storage_unavailable",
        "The object storage did not answer while the job read its dataset or stored a checkpoint or "
        "its model (after retries with backoff); start the job again once it is back.",
    ),
    JobErrorCode(
        "storage_full",
        "The server ran out of disk space; operators must free some, then start the job again.",
    ),
    JobErrorCode(
        "worker_lost",
        "The workers running the job stopped responding APLSERVE_JOB_MAX_ATTEMPTS times "
        "(killed, out of host memory); check the workers, then start the job again.",
    ),
    JobErrorCode("training_failed", "Training failed for a reason the message gives."),
    JobErrorCode(
        "internal", "A fault in the worker, logged with its traceback; tell the operators the job id."
    ),
)

ERROR_CODES: dict[str, ErrorCode] = {entry.code: entry for entry in _HTTP}
JOB_ERROR_CODES: dict[str, JobErrorCode] = {entry.code: entry for entry in _JOB}
AREAS = (ANY, UPLOAD, CONTENT, JOBS, SWEEPS, MODELS, SERVICE)
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

_INTRO = """\
# Error codes

Every error response of the HTTP API is `application/problem+json` (RFC 9457) with a machine
`code`; a failed job says why in `error.code`. This page lists every code, its HTTP status and
what to do about it. It is generated from `core/error_codes.py` (`python -m core.error_codes`),
and a test fails when the code raises a code this page does not list. The OpenAPI page (/docs)
shows the codes each route can answer with, with examples.

A problem looks like this:

```json
{"type": "/problems/not-found", "title": "Not Found", "status": 404,
 "detail": "job was not found", "code": "not_found"}
```

422 answers from request validation also carry `errors`: `[{"loc": ["body", "loss", "clip"], "msg": "..."}]`.
"""


def render_markdown() -> str:
    """docs/errors.md, from the registry."""
    parts = [_INTRO]
    for area in AREAS:
        parts.append(f"\n## {area}\n\n| code | status | what to do |\n|---|---|---|\n")
        for entry in _HTTP:
            if entry.area == area:
                statuses = ", ".join(str(status) for status in entry.statuses)
                parts.append(f"| `{entry.code}` | {statuses} | {entry.advice} |\n")
    parts.append("\n## Failed jobs (`error.code` of a job)\n\n| code | what to do |\n|---|---|\n")
    parts.extend(f"| `{entry.code}` | {entry.advice} |\n" for entry in _JOB)
    return "".join(parts)


if __name__ == "__main__":
    DOC_PATH.write_text(render_markdown(), encoding="utf-8")
    print(DOC_PATH)
