"""Webhooks: a signed POST to a job's `webhook_url` when the job ends.

In the shared layer because the worker imports `notify` to send the calls for the jobs
it finishes; the HTTP route for the secret is api/routes/webhooks.py.
"""
