"""Who is at fault, as types.

`ParseError` means a peer sent bytes we cannot read: the caller drops the datagram and counts it.
`ProtocolError` means a peer broke the protocol in a way that ends its session (a wrong DTLS
fingerprint, a failed handshake). `LocalError` means our own code misused an engine's API.
Engines raise only these (or subclasses), so one receive boundary can turn them into counted
drops or session closes without catching bare `Exception`.
"""


class RtcError(Exception):
    """Base of every error the sans-IO core raises on purpose."""


class ParseError(RtcError):
    """A datagram from the network is malformed; drop it and count it."""


class ProtocolError(RtcError):
    """The peer violated the protocol; the session it belongs to must end."""


class LocalError(RtcError):
    """The caller used an engine in a way its API does not allow."""
