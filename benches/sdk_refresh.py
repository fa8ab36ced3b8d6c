"""One token refresh the way a cron'd per-account job does it with Dhan's official Python SDK
(dhanhq): a fresh TOTP code, generateAccessToken with the PIN, the static-IP read the operator
also makes, the token written to a file. Pointed at dhan-mock instead of Dhan.

Usage: sdk_refresh.py MOCK_URL CLIENT_ID PIN TOTP_SECRET OUT_FILE
Prints one JSON line: the process's own CPU seconds and peak RSS, start-up and imports included.
"""

import json
import resource
import sys

import pyotp
from dhanhq import DhanLogin
from dhanhq.dhan_http import DhanHTTP


def main():
    mock, client_id, pin, totp_secret, out = sys.argv[1:6]
    DhanLogin.AUTH_BASE_URL = mock
    DhanLogin.API_BASE_URL = mock + "/v2"
    DhanHTTP.API_BASE_URL = mock + "/v2"
    login = DhanLogin(client_id)
    minted = login.generate_token(pin, pyotp.TOTP(totp_secret).now())
    token = minted.get("accessToken")
    if not token:
        sys.exit(f"no token: {minted.get('message') or minted}")
    ip = login.get_ip(token)
    with open(out, "w") as f:
        f.write(token)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "cpuSeconds": usage.ru_utime + usage.ru_stime,
        "maxRssKib": usage.ru_maxrss,
        "ipRead": isinstance(ip, dict),
    }))


if __name__ == "__main__":
    main()
