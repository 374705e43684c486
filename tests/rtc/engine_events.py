"""Draining a sans-IO engine's events, the same way for every engine under test."""


def drain(engine) -> list:
    """Every pending event of ``engine`` (anything with ``next_event()``), oldest first."""
    events = []
    while (event := engine.next_event()) is not None:
        events.append(event)
    return events
