"""The composition root: the `aplserve` command line that starts the API and the workers.

`api` may never import `worker` (the API process stays light); this package is the
one place allowed to know both.
"""
