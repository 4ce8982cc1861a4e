"""`python -m worker`: what `aplserve worker` and the embedded supervisor run."""

from __future__ import annotations

import argparse

from worker.app import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args()
    main(concurrency=args.concurrency, loglevel=args.loglevel)
