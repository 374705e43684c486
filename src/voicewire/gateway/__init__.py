"""HTTP signaling: SDP offers in, answers naming the relay out (DESIGN §6)."""
