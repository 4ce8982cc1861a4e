"""`python -m worker.rank`: one rank of a job's data-parallel group (started by worker.launcher).

Every rank trains (`worker.runner.run_rank`); rank 0 alone talks to the database and the
stored files: progress, metrics, checkpoints, cancel, the artifact and how the run
ended. Each rank writes one small JSON file into the outcome directory the worker
gave: `{"outcome": ...}` from rank 0 when the run ended its own way, or
`{"failure": {"code", "message"}}` from any rank that failed; a rank that was killed
writes nothing, which is how the worker tells a lost process from a failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def outcome_file(directory: Path, rank: int) -> Path:
    return directory / f"rank-{rank}.json"


def _write(directory: Path, rank: int, document: dict[str, object]) -> None:
    path = outcome_file(directory, rank)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(document))
    partial.replace(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.rank")
    parser.add_argument("--job-file", type=Path, required=True)
    parser.add_argument("--outcome-dir", type=Path, required=True)
    parser.add_argument("--torch-threads", type=int, default=None)
    args = parser.parse_args(argv)

    from worker.launcher import watch_parent

    watch_parent(lambda: os._exit(1))  # the launcher is gone: leave no orphan behind
    rank = int(os.environ["RANK"])
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")

    import torch

    from apl.training.distributed import DistributedSetup
    from core.jobs.lifecycle import ClaimedJob
    from core.settings import get_settings
    from worker.runner import classify, run_rank

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    setup = DistributedSetup(
        rank=rank, world_size=int(os.environ["WORLD_SIZE"]), local_rank=int(os.environ["LOCAL_RANK"])
    )
    job = ClaimedJob(**json.loads(args.job_file.read_text()))
    try:
        outcome = run_rank(job, get_settings(), setup)
    except Exception as error:
        failure = classify(error)
        log.warning(
            "job %s rank %d failed: %s: %s", job.id, rank, failure.code, failure.message, exc_info=True
        )
        _write(args.outcome_dir, rank, {"failure": {"code": failure.code, "message": failure.message}})
        return 1
    _write(args.outcome_dir, rank, {"outcome": outcome})
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip torch's slow interpreter teardown, like the worker does
