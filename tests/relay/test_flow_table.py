from voicewire.relay.flow_table import FlowTable


def age(table, rotations):
    return sum(table.rotate() for _ in range(rotations))


def test_idle_flow_expires_after_the_timeout_and_not_before():
    table = FlowTable(idle_timeout=4.0, generations=4)
    assert table.rotation_period == 1.0
    table.install("c", "route")
    assert age(table, 4) == 0  # idle for 4 periods = the timeout: still there
    assert len(table) == 1
    assert age(table, 1) == 1  # one more period: gone
    assert table.get("c") is None and len(table) == 0


def test_traffic_keeps_a_flow_alive():
    table = FlowTable(idle_timeout=4.0, generations=4)
    table.install("c", "route")
    for _ in range(20):
        age(table, 3)
        assert table.get("c") == "route"
    assert len(table) == 1


def test_install_replaces_in_any_generation():
    table = FlowTable(idle_timeout=4.0)
    table.install("c", "old")
    age(table, 2)
    table.install("c", "new")
    assert len(table) == 1
    assert table.get("c") == "new"
