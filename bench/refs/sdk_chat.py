"""Reference: the official-SDK script a user would write (`AsyncOpenAI` + a semaphore).

The SDK as it comes: its default HTTP client, timeout and retries (2, honouring
Retry-After); each answer written as one JSONL line. Run by the bench venv's python:
`sdk_chat.py IN.jsonl OUT.jsonl --base-url URL [--concurrency N]`. The key comes from
CAICAINI_API_KEY; it is sent, never written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
from pathlib import Path
from typing import TextIO

import openai


async def run(args: argparse.Namespace, rows: list[dict[str, str]], out: TextIO) -> int:
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=os.environ["CAICAINI_API_KEY"])
    semaphore = asyncio.Semaphore(args.concurrency)
    failed = 0

    async def one(row: dict[str, str]) -> None:
        nonlocal failed
        try:
            async with semaphore:
                answer = await client.chat.completions.create(
                    model="caicaini/auto",
                    max_tokens=1024,
                    messages=[{"role": "user", "content": row["prompt"]}],
                )
        except openai.APIError as exc:
            failed += 1
            out.write(json.dumps({"id": row["id"], "error": str(exc)}) + "\n")
            return
        out.write(json.dumps({"id": row["id"], "response": answer.model_dump()}) + "\n")

    async with client:
        await asyncio.gather(*(one(row) for row in rows))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with Path(args.input).open() as fh:
        rows = [json.loads(line) for line in fh]
    with Path(args.output).open("w") as out:
        return asyncio.run(run(args, rows, out))


if __name__ == "__main__":
    raise SystemExit(main())
