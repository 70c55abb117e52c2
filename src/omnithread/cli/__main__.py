"""``python -m omnithread.cli``: the command line, also as a file ``spark-submit`` can run (``docs/scale.md``)."""

from omnithread.cli.main import main

if __name__ == "__main__":
    main()
