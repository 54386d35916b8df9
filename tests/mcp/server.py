"""A small MCP server for tests/mcp_in_envoy.rs: the SDK's MCPServer over
Streamable HTTP on 127.0.0.1:PORT, with four tools (one named like a
Notion tool, so that policies/mcp.json's `notion*` limit covers it, and
one that takes a second, to hold calls in flight).

Usage: server.py PORT
"""

import asyncio
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

app = MCPServer("sluice-test")


@app.tool(name="notion-search")
def notion_search(query: str) -> str:
    """Searches a (pretend) Notion workspace."""
    return f"notion results for {query}"


@app.tool(name="github-search")
def github_search(query: str) -> str:
    """Searches (pretend) GitHub."""
    return f"github results for {query}"


@app.tool(name="echo")
def echo(text: str) -> str:
    """Says it back."""
    return text


@app.tool(name="slow-echo")
async def slow_echo(text: str) -> str:
    """Says it back after a second."""
    await asyncio.sleep(1.0)
    return text


if __name__ == "__main__":
    app.run(
        transport="streamable-http",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        # Envoy forwards the client's Host (127.0.0.1:<listener port>).
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
