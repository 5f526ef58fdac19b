from batchrunner.cli import entry

entry()
