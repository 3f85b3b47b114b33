"""The `airflow-batch-streaming` command.

Each subcommand lives in its own module and is imported only when chosen, so
`airflow-batch-streaming preflight` never pays for the emulator's imports and
the other way round.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: airflow-batch-streaming COMMAND [options]

commands:
  preflight   check that an image (or a whole Batch job) can use Image Streaming
  fix         write a streamable copy of an image into Artifact Registry where the job runs
  emulator    run the local Batch, Cloud Logging and Service Usage emulator

Run `airflow-batch-streaming COMMAND --help` for a command's options.
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "preflight":
        from airflow_batch_streaming.preflight_cli import main as run
    elif command == "fix":
        from airflow_batch_streaming.fix_cli import main as run
    elif command == "emulator":
        from airflow_batch_streaming.emulator.cli import main as run
    else:
        sys.stderr.write(f"airflow-batch-streaming: unknown command {command!r}\n\n{USAGE}")
        return 2
    return run(rest)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
