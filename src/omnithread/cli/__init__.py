"""The command line: thin, it parses, calls the stage, and formats."""
