"""The MCP SDK's client against URL, as tests/mcp_in_envoy.rs drives it:
one JSON line per step on stdout, so that the test asserts on what the SDK
itself surfaced (results, or MCPError's code, message and data).

Usage: client.py URL TENANT

Steps: the handshake; `tools/list` six times in a row (policies/mcp.json
allows 5 a second per tenant); `notion-search` four times in a row (3 a
second per tenant, queued up to 2 s), each with its duration; twelve
`slow-echo` calls (a second each) at once (10 in flight per tenant), then
one more once they have ended.
"""

import asyncio
import json
import sys
import time

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


def report(**fields):
    print(json.dumps(fields), flush=True)


async def step(name, i, call):
    started = time.monotonic()
    try:
        result = await call()
        report(step=name, i=i, ok=True, ms=round((time.monotonic() - started) * 1000), result=result)
    except MCPError as e:
        report(step=name, i=i, ok=False, ms=round((time.monotonic() - started) * 1000), code=e.code, message=e.message, data=e.data)


async def main(url, tenant):
    http = create_mcp_http_client(headers={"x-tenant-id": tenant})
    async with http, Client(streamable_http_client(url, http_client=http), cache=None) as client:
        report(step="handshake", ok=True)
        for i in range(6):
            await step("list", i, lambda: listed(client))
        for i in range(4):
            await step("notion", i, lambda: called(client, "notion-search", {"query": "q"}))
        await asyncio.gather(*(step("inflight", i, lambda i=i: called(client, "slow-echo", {"text": str(i)})) for i in range(12)))
        await step("after", 0, lambda: called(client, "slow-echo", {"text": "after"}))


async def listed(client):
    return sorted(t.name for t in (await client.list_tools()).tools)


async def called(client, name, args):
    result = await client.call_tool(name, args)
    return [c.text for c in result.content if getattr(c, "text", None)]


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
