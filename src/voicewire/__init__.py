"""voicewire: live voice between people and AI models over WebRTC."""

__version__ = "0.1.0"
