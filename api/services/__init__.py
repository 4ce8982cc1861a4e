"""Use cases behind the routes; each takes a session and the caller's owner id."""
