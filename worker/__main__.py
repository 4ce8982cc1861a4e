"""`python -m worker`: what `aplserve worker` and the embedded supervisor run."""

from __future__ import annotations

import argparse

from worker.app import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once, one process each")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument(
        "--supervisor-pid", type=int, default=None, help="shut down when this parent process is gone"
    )
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch threads for training (default: the setting)"
    )
    args = parser.parse_args()
    main(
        concurrency=max(1, args.concurrency),
        loglevel=args.loglevel,
        supervisor_pid=args.supervisor_pid,
        torch_threads=args.torch_threads,
    )
