"""The persistence layer shared by the API and the worker: models, sessions, migrations."""
