"""What several voicewire processes share through Redis: the transceiver registry, where each call
lives, and ephemeral keys (DESIGN §8). Nothing on a packet path touches it."""
