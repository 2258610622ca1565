"""Compatibility with the official China E-Port client's WebSocket protocol.

Pages written for `ws://127.0.0.1:61232` (the official Windows client) work against the
agent unchanged: `protocol` is the wire format (greeting, replies, BLOCKTXT chunks),
`methods` maps the client's card functions onto CardService, `server` is the endpoint
and its Component. Off by default (`[compat] enabled`); see docs/compat.md.
"""
