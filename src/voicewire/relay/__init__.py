"""The edge forwarder: one public UDP port, routing on the signed ICE ufrag (DESIGN §4)."""
