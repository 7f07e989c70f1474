"""The README's "For agents (MCP)" section documents exactly the tools the server has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ilinkbot.bot.agent_tools import AgentTools
from ilinkbot.bot.config import Config
from ilinkbot.bot.mcp_server import TOOL_NAMES, build_server
from tests.processes import ROOT


def _section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## For agents (MCP)")
    return readme[start : readme.index("\n## ", start + 1)]


async def test_every_tool_and_parameter_is_in_the_readme(tmp_path: Path) -> None:
    section = _section()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(\w+)` \| (.*)$", section, flags=re.MULTILINE)
    }
    tools = AgentTools(Config(home=tmp_path, base_url="http://127.0.0.1:9"))
    try:
        listed = await build_server(tools).list_tools()
    finally:
        await tools.aclose()
    assert sorted(t.name for t in listed) == sorted(TOOL_NAMES) == sorted(rows)
    for tool in listed:
        assert tool.description, tool.name
        params = set(tool.input_schema.get("properties", {}))
        documented = set(re.findall(r"`(\w+)`", rows[tool.name].split(" | ")[0]))
        assert params == documented, tool.name


def test_the_client_configuration_is_valid_json() -> None:
    block = re.search(r"```json\n(.*?)```", _section(), flags=re.DOTALL)
    assert block is not None
    server = json.loads(block.group(1))["mcpServers"]["wechat"]
    assert server == {"command": "ilinkbot", "args": ["mcp"]}
