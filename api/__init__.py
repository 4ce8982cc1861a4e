"""aplserve's HTTP service, settings and the persistence layer shared with the worker."""
