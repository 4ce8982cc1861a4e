"""apl: the Asymmetric Polynomial Loss family and the training engine behind aplserve.

The package is the pure ML library: it never reads the environment or a database,
and its top level imports nothing heavy, so `apl.spec` and `apl.catalog` stay cheap
for the API process.
"""

__version__ = "0.1.0"
