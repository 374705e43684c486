"""What several voicewire processes share through Redis: the transceiver registry, where each call
lives, ephemeral keys, and which transceiver owns each client address (DESIGN §8). Nothing on a
packet path waits for it."""
