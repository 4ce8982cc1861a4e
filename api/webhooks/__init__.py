"""Webhooks: a signed POST to a job's `webhook_url` when the job ends.

Kept free of FastAPI outside `routes.py`, because the worker imports `notify` to send
the calls for the jobs it finishes.
"""
