#!/usr/bin/python3
"""Verifies the DKIM signature of the message on standard input, as a receiving mail server
would, with dkimpy (Debian's python3-dkim; Ed25519 through python3-nacl): a verifier
independent of the signer (lettre, in email-service). The key is not looked up in DNS but
taken from the zone-file line given as the only argument, as `email-service --dkim-dns-record`
prints it. Exits 0 when the signature verifies; says why on standard error otherwise."""
import logging
import re
import sys

import dkim

line = sys.argv[1]
name, _, rest = line.partition(" IN TXT ")
record = "".join(re.findall(r'"([^"]*)"', rest)).encode()


def txt(query, timeout=5):
    query = query.decode() if isinstance(query, bytes) else query
    return record if query.rstrip(".") == name.rstrip(".") else None


logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
message = sys.stdin.buffer.read()
verified = dkim.verify(message, logger=logging.getLogger("dkim"), dnsfunc=txt, minkey=2048)
print("pass" if verified else "fail")
sys.exit(0 if verified else 1)
