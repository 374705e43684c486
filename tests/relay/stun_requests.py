"""Client STUN binding requests for relay tests, built with aioice as an independent encoder."""

from __future__ import annotations

from aioice import stun


def binding_request(ufrag: str, client_ufrag: str = "clnt", password: bytes = b"p" * 22) -> bytes:
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = f"{ufrag}:{client_ufrag}"
    message.attributes["PRIORITY"] = 1853824767
    message.attributes["ICE-CONTROLLING"] = 0x1234
    message.add_message_integrity(password)
    message.add_fingerprint()
    return bytes(message)
