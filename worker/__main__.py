"""Command line: `python -m worker replay [FILE]`, `python -m worker run`, `python -m worker bench`."""

from __future__ import annotations

import argparse
import sys


def _replay(args: argparse.Namespace) -> int:
    from worker.replay import Replayer

    out = sys.stdout.buffer
    if args.file in (None, "-"):
        Replayer().run(sys.stdin.buffer, out)
    else:
        with open(args.file, "rb") as handle:
            Replayer().run(handle, out)
    out.flush()
    return 0


def _run(args: argparse.Namespace) -> int:
    from worker.kafka.app import run_worker

    return run_worker()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmark has its own options (python -m worker bench --help)
        from worker.bench.kafka_bench import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="claims-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="replay inbound JSONL (FILE or stdin) to outbound JSONL on stdout")
    replay.add_argument("file", nargs="?")
    replay.set_defaults(func=_replay)
    run = sub.add_parser("run", help="run the Kafka worker (settings from the environment)")
    run.set_defaults(func=_run)
    sub.add_parser("bench", help="end-to-end Kafka benchmark (python -m worker bench --help)")
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
