"""A real SMTP server for tests/it/notifications.rs: aiosmtpd on 127.0.0.1:PORT, each message
written to OUT_DIR as <n>.eml (written to a temporary name, then renamed, so a reader never sees
half a message). Runs until killed.

Usage: smtp_sink.py PORT OUT_DIR
"""

import os
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            name = os.path.join(self.out_dir, f"{self.count:04}.eml")
        header = f"X-Envelope-From: {envelope.mail_from}\nX-Envelope-To: {','.join(envelope.rcpt_tos)}\n"
        with open(name + ".tmp", "wb") as f:
            f.write(header.encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(name + ".tmp", name)
        return "250 Message accepted"


def main():
    port, out_dir = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(out_dir), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
