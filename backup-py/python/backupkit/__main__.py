"""`python -m backupkit ...`: the backupkit command line, same code as the binary."""

import sys

from backupkit import _backupkit


def _main() -> int:
    # The CLI names itself after argv[0]; show "backupkit", not "__main__.py".
    return _backupkit.main(["backupkit", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(_main())
