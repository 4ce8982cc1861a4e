"""How `aplserve serve` runs the HTTP app: uvicorn's protocol with aplserve's request-head limits
(`http_protocol`) and, with `--workers N`, a supervised process per listening socket (`processes`).
Process and protocol code, not HTTP routes: the composition root owns it, `api` stays the app."""
