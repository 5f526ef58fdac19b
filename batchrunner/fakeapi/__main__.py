"""`python -m batchrunner.fakeapi`: the same command as `batchrunner fake-api`."""

from __future__ import annotations

from batchrunner.fakeapi.command import fake_api

fake_api(prog_name="python -m batchrunner.fakeapi")
