"""The shared layer of aplserve: what both the HTTP API and the worker use.

Settings, the database (models, the one session factory, migrations runner), the job
lifecycle, the broker client side, webhook delivery and where files live on disk.
It never imports `api` (HTTP) or `worker` (Celery tasks).
"""
