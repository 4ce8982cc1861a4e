"""Client commands of the `aplserve` CLI: they talk to a running server over HTTP.

Server URL and key: --url / --api-key, or APLSERVE_URL / APLSERVE_API_KEY.
"""

from __future__ import annotations

import typer


def register_client_commands(app: typer.Typer) -> None:
    from aplserve.commands import datasets, jobs, models, sweeps, webhooks

    app.add_typer(datasets.app, name="datasets")
    app.add_typer(jobs.app, name="jobs")
    app.add_typer(sweeps.app, name="sweeps")
    app.add_typer(models.app, name="models")
    app.command("predict")(models.predict)
    app.add_typer(webhooks.app, name="webhooks")
