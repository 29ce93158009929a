"""`python -m fastrnn <command>`. Commands: bench (see `python -m fastrnn bench --help`)."""

import sys

USAGE = """usage: python -m fastrnn <command> [options]

commands:
  bench    benchmark fastrnn's LSTM/GRU/RNN against torch.nn on this machine
           (`python -m fastrnn bench --help` for its options)
"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "bench":
        # Imported only when asked for: the benchmark pulls in more than the library needs.
        from .bench.cli import main as bench_main
        return bench_main(rest)
    print(USAGE + f"\nerror: unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
