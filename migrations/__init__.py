"""Alembic environment and revisions; a package so that an installed aplserve finds them."""
