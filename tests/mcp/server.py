"""A small MCP server for tests/mcp_in_envoy.rs: the SDK's MCPServer over
Streamable HTTP on 127.0.0.1:PORT, with three tools (one named like a
Notion tool, so that policies/mcp.json's `notion*` limit covers it).

Usage: server.py PORT
"""

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


if __name__ == "__main__":
    app.run(
        transport="streamable-http",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        # Envoy forwards the client's Host (127.0.0.1:<listener port>).
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
