"""Sans-IO WebRTC core: engines that take bytes and a timestamp and return bytes, events, deadlines.

Nothing in this package may import asyncio, socket, time or random: clocks and randomness are
passed in, so tests drive every engine with a fake clock and a seeded generator."""
