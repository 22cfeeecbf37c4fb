"""Sans-IO wire protocol: framing, encryption and messages."""
