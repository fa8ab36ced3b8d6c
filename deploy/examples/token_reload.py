#!/usr/bin/env python3
"""Read the Dhan access token that dhan-operator keeps in a mounted Secret, and pick up a new one
the moment it lands — without restarting the trading program.

Every new token kills the previous one at once, so a program that read the token at start-up
fails from the next mint on. Mount the output Secret as a volume (not with subPath, and not as an
environment variable: neither is ever updated in a running container) and let this class tell
you when it changed. The kubelet replaces a Secret volume's files atomically (it points the
volume's `..data` symlink at a new directory); with the operator's pod syncs (`--sync-pods` and
the Pod's opt-in, see deploy/examples/trading-pod.yaml) it does so within about a second of the
mint, else at its next periodic sync (a minute or more).

    tokens = TokenFile("/var/run/dhan", on_change=lambda token: dhan.set_token(token))
    tokens.start()            # checks every 0.5 s in a background thread; SIGHUP checks at once
    dhan = dhanhq(client_id, tokens.token())

Also re-read on a 401 from Dhan (`tokens.token()` is cheap: one readlink when nothing changed).

Run it on its own to watch a mounted Secret: `python3 token_reload.py /var/run/dhan` prints a
line (a short hash, never the token) on each change.
"""

import hashlib
import os
import signal
import sys
import threading
import time


class TokenFile:
    def __init__(self, directory="/var/run/dhan", key="DHAN_ACCESS_TOKEN", on_change=None,
                 every=0.5):
        self.directory = directory
        self.path = os.path.join(directory, key)
        self.on_change = on_change
        self.every = every
        self._lock = threading.Lock()
        self._version = None
        self._token = None
        self._wake = threading.Event()

    def _current_version(self):
        # The kubelet's atomic writer: `..data` names the directory of the current files.
        try:
            return os.readlink(os.path.join(self.directory, "..data"))
        except OSError:
            stat = os.stat(self.path)
            return (stat.st_ino, stat.st_mtime_ns)

    def token(self):
        """The current token, read again only if the volume changed since the last read."""
        changed = None
        with self._lock:
            version = self._current_version()
            if version != self._version or self._token is None:
                with open(self.path, encoding="ascii") as f:
                    token = f.read().strip()
                if token != self._token:
                    changed = self._token is not None
                    self._token = token
                self._version = version
            token = self._token
        if changed and self.on_change:
            self.on_change(token)
        return token

    def start(self):
        """Checks in the background, every `every` seconds and on SIGHUP."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, lambda *_: self._wake.set())

        def loop():
            while True:
                self._wake.wait(self.every)
                self._wake.clear()
                try:
                    self.token()
                except OSError as error:  # mid-swap, or the Secret is gone: keep the last one
                    print(f"token file: {error}", file=sys.stderr)

        self.token()
        threading.Thread(target=loop, name="dhan-token", daemon=True).start()
        return self


def _short(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


if __name__ == "__main__":
    directory = sys.argv[1] if len(sys.argv) > 1 else "/var/run/dhan"
    every = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    tokens = TokenFile(
        directory,
        on_change=lambda token: print(f"new token {_short(token)} at {time.time():.3f}", flush=True),
        every=every,
    ).start()
    print(f"token {_short(tokens.token())} at {time.time():.3f}", flush=True)
    while True:
        time.sleep(3600)
