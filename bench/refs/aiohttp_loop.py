"""Reference: the bare aiohttp loop, the floor for a Python client of this API.

A semaphore, `session.post`, the JSON answer parsed and one line written per row: no
checkpoint, no retries, no pacing, no calls.log. Run by the bench venv's python:
`aiohttp_loop.py IN.jsonl OUT.jsonl --base-url URL [--api chat] [--concurrency N] [--uvloop]`.
The key comes from CAICAINI_API_KEY; it is sent, never written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
from pathlib import Path
from typing import Any, TextIO

import aiohttp


def _raise_open_files() -> None:
    """One socket per request in flight: lift the soft open-file limit to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run(args: argparse.Namespace, rows: list[dict[str, Any]], out: TextIO) -> int:
    headers = {"Authorization": f"Bearer {os.environ['CAICAINI_API_KEY']}"}
    if args.api == "messages":
        url = f"{args.base_url}/messages"
        headers["anthropic-version"] = "2023-06-01"
    else:
        url = f"{args.base_url}/chat/completions"
    semaphore = asyncio.Semaphore(args.concurrency)
    failed = 0
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(row: dict[str, Any]) -> None:
            nonlocal failed
            body = {
                "model": "caicaini/auto",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": row["prompt"]}],
            }
            async with semaphore, session.post(url, json=body) as resp:
                answer = await resp.json()
                failed += resp.status != 200
            out.write(json.dumps({"id": row["id"], "response": answer}) + "\n")

        await asyncio.gather(*(one(row) for row in rows))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api", choices=("messages", "chat"), default="messages")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as ours does")
    args = parser.parse_args()
    _raise_open_files()
    with Path(args.input).open() as fh:
        rows = [json.loads(line) for line in fh]
    with Path(args.output).open("w") as out:
        if args.uvloop:
            import uvloop

            return uvloop.run(run(args, rows, out))
        return asyncio.run(run(args, rows, out))


if __name__ == "__main__":
    raise SystemExit(main())
