from __future__ import annotations

import pytest

from voicewire.agents.echo import EchoAgent
from voicewire.serve import EmbeddedStack


@pytest.fixture
async def stack(request):
    """The embedded system in this process: relay worker, transceiver, gateway, echo agent."""
    options = getattr(request, "param", {})
    async with EmbeddedStack(
        http=("127.0.0.1", 0), udp=("127.0.0.1", 0), agent_factory=EchoAgent, **options
    ) as running:
        yield running
