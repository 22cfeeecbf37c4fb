"""chatproto: an encrypted client/server chat system on Twisted."""
