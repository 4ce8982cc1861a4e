"""aplserve's Celery worker: a thin shell that claims a job and runs `apl` training."""
