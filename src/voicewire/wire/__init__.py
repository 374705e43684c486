"""Wire formats shared by the relay and the transceiver: the routing token and the relay header."""
