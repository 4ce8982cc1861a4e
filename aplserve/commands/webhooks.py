"""`aplserve webhooks secret [--rotate]`."""

from __future__ import annotations

from typing import Annotated

import typer

from aplserve.commands.common import JsonOption, KeyOption, UrlOption, connected, print_json

app = typer.Typer(help="The secret that signs your jobs' webhook calls.", no_args_is_help=True)


@app.command("secret")
def secret(
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Replace the secret with a new one first.")
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print the webhook signing secret (alone on the last line).

    Receivers check `X-Aplserve-Signature: sha256=HMAC_SHA256(secret, "<X-Aplserve-Timestamp>.<raw body>")`,
    e.g. with `aplserve.client.verify_webhook`.
    """
    with connected(url, api_key) as client:
        value = client.webhooks.rotate() if rotate else client.webhooks.secret()
    if json_output:
        print_json(value)
        return
    typer.echo(f"webhook calls are signed in {value.signature_header} (sha256=<hex>) over")
    typer.echo(f'"<{value.timestamp_header}>.<raw body>" with this secret:')
    typer.echo(value.secret)
