#!/usr/bin/env python3
"""A real SMTP server for tests/notifications.rs, on Debian's python3-aiosmtpd.

    smtp_sink.py serve HOST PORT MAILDIR [CERT KEY]
        Accepts mail on HOST:PORT and delivers every message into the Maildir MAILDIR
        (aiosmtpd's Mailbox handler). Recipients whose local part starts with "reject" are
        refused with 550 (a permanent error), "tempfail" with 451 (a transient one).
        With CERT and KEY (PEM files) the server requires STARTTLS with that certificate
        before it takes any mail.

    smtp_sink.py tls-proxy HOST PORT UPSTREAM_PORT CERT KEY
        Terminates TLS on HOST:PORT with CERT and KEY and passes the bytes on to
        HOST:UPSTREAM_PORT in plain text (an HTTPS front for a plain HTTP sink).

    smtp_sink.py read MAILDIR
        Prints every message delivered into MAILDIR as one JSON line: the envelope
        recipients, the headers the tests check, and the decoded text and HTML parts.
"""
import asyncio
import json
import mailbox
import os
import sys
from email import policy
from email.parser import BytesParser


def server_tls(cert, key):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def serve(host, port, maildir, cert=None, key=None):
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import SMTP

    class Sink(Mailbox):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            local = address.split("@", 1)[0].lower()
            if local.startswith("reject"):
                return "550 5.1.1 <%s>: no such mailbox here" % address
            if local.startswith("tempfail"):
                return "451 4.3.0 try again later"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    os.makedirs(os.path.dirname(os.path.abspath(maildir)), exist_ok=True)
    handler = Sink(maildir)
    tls = {}
    if cert is not None:
        tls = {"tls_context": server_tls(cert, key), "require_starttls": True}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(handler, hostname="sink.test", **tls), host, int(port))
    )
    print("listening on %s:%s" % (host, port), flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


def tls_proxy(host, port, upstream_port, cert, key):
    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                host, int(upstream_port)
            )
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer)
        )

    async def main():
        server = await asyncio.start_server(
            handle, host, int(port), ssl=server_tls(cert, key)
        )
        print("listening on %s:%s" % (host, port), flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def read(maildir):
    os.makedirs(os.path.dirname(os.path.abspath(maildir)), exist_ok=True)
    box = mailbox.Maildir(maildir, factory=None, create=True)
    for key in sorted(box.keys()):
        message = BytesParser(policy=policy.default).parsebytes(box.get_bytes(key))
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        print(
            json.dumps(
                {
                    "rcptTo": message["X-RcptTo"],
                    "from": message["From"],
                    "to": message["To"],
                    "subject": message["Subject"],
                    "messageId": message["Message-ID"],
                    "idempotencyKey": message["Idempotency-Key"],
                    "contentType": message.get_content_type(),
                    "text": text.get_content() if text is not None else None,
                    "html": html.get_content() if html is not None else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) in (5, 7) and sys.argv[1] == "serve":
        serve(*sys.argv[2:])
    elif len(sys.argv) == 7 and sys.argv[1] == "tls-proxy":
        tls_proxy(*sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "read":
        read(sys.argv[2])
    else:
        sys.exit(__doc__)
