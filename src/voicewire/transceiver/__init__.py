"""asyncio IO around the sans-IO core: one UDP socket, one timer heap, every session (DESIGN §5)."""
